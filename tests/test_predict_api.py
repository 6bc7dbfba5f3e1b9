"""The Python API: `Predictor.load` / `predict_file` / batch forms, fallbacks, providers, and several threads."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bst_rt.runtime.datasets import read_eval_package
from bst_rt.runtime.predict import Predictor
from bst_rt.runtime.taxonomy import CODES, parent_of

LIBROSA = sorted(Path("/work/shared/audio/librosa-data").glob("*.ogg"))


@pytest.fixture(scope="module")
def predictor(bundle):
    return Predictor.load(bundle, system=1, provider="auto", threads=1)


def test_predict_file_returns_a_full_prediction(predictor):
    path = LIBROSA[0] if LIBROSA else None
    p = predictor.predict_file(path, title="Trumpet loop", tags="brass, loop", description="<b>A</b> short phrase")
    assert p.label in CODES and p.parent == parent_of(p.label) and 0.0 <= p.score <= 1.0
    assert p.probabilities.shape == (23,) and abs(p.probabilities.sum() - 1) < 1e-5
    assert len(p.top_k) == 5 and p.top_k[0][1] >= p.top_k[-1][1]
    assert p.fallback is None if path else p.fallback == "missing audio"


def test_missing_or_undecodable_audio_falls_back_to_the_text_only_family(predictor, tmp_path):
    text_only = predictor.families.index(predictor.bundle.manifest.heads.text_only_family)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wave file at all")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    meta = dict(title="Dog barking", tags="dog animal", description="a dog barks twice")
    preds = {name: predictor.predict_file(path, **meta) for name, path in
             (("missing", tmp_path / "absent.wav"), ("junk", junk), ("empty", empty))}
    assert preds["missing"].fallback == "missing audio"
    assert preds["empty"].fallback == "zero-byte audio"
    assert preds["junk"].fallback.startswith("undecodable audio")
    # all three are the text-only family's distribution on the same text, hence identical
    assert np.allclose(preds["missing"].probabilities, preds["junk"].probabilities)
    ev = predictor._evidence([predictor_clip(tmp_path / "absent.wav", **meta)])
    assert np.allclose(preds["missing"].probabilities, ev.family_probs[0, text_only], atol=1e-7)


def predictor_clip(path, **meta):
    from bst_rt.runtime.datasets import Clip

    return Clip(id="x", audio_path=path, **meta)


@pytest.mark.skipif(not LIBROSA, reason="needs /work/shared/audio/librosa-data")
def test_empty_metadata_falls_back_to_the_audio_only_family(predictor):
    p = predictor.predict_file(LIBROSA[0])
    assert p.fallback == "empty metadata"
    audio_only = predictor.families.index(predictor.bundle.manifest.heads.audio_only_family)
    ev = predictor._evidence([predictor_clip(LIBROSA[0], title="", tags="", description="")])
    assert np.allclose(p.probabilities, ev.family_probs[0, audio_only], atol=1e-7)


def test_several_threads_get_the_same_results_as_one(predictor, synth_corpus):
    clips = read_eval_package(synth_corpus.eval).clips[:6]
    serial = [predictor.predict_file(c.audio_path, title=c.title, tags=c.tags, description=c.description,
                                     item_id=c.id) for c in clips]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda c: predictor.predict_file(c.audio_path, title=c.title, tags=c.tags,
                                                                  description=c.description, item_id=c.id), clips * 2))
    for a, b in zip(serial * 2, threaded):
        assert a.id == b.id and a.label == b.label
        assert np.abs(a.probabilities - b.probabilities).max() <= 1e-6


def test_streaming_batch_and_several_systems_forms_agree(predictor, synth_corpus):
    clips = read_eval_package(synth_corpus.eval).clips[:6]
    streamed = list(predictor.predict_clips(clips, batch_size=4))
    batch = predictor.predict_batch(clips, batch_size=6)
    both = predictor.predict_systems(clips, (1, 2))
    for other in (batch, both[1]):
        assert [(p.label, f"{p.score:.6f}") for p in streamed] == [(p.label, f"{p.score:.6f}") for p in other]


def test_provider_in_use_is_stated_and_cuda_is_never_claimed_without_it(predictor, bundle):
    import onnxruntime as ort

    used = predictor.providers
    assert set(used) == {"audio_encoder", "text_encoder", "heads", "ranker"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert predictor.provider == "cpu" and set(used.values()) == {"cpu"}
        from bst_rt.runtime.session import ProviderError

        with pytest.raises(ProviderError, match="cuda"):
            Predictor.load(bundle, provider="cuda")
    else:  # a GPU machine: 'auto' must have picked CUDA for every graph it could run there
        assert predictor.provider in ("cuda", "mixed")
