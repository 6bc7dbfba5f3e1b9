"""The Python API: `Predictor.load` / `predict_file` / `predict_waveform` / batch forms, fallbacks, providers,
embeddings, the context manager, several threads, and the README example run against the test bundle."""
from __future__ import annotations

import contextlib
import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bst_rt.runtime import AudioError, BstError, Clip, Predictor, ProviderError
from bst_rt.runtime.datasets import read_eval_package
from bst_rt.runtime.taxonomy import CLASSES, CODES, PARENT_NAMES, parent_of

LIBROSA = sorted(Path("/work/shared/audio/librosa-data").glob("*.ogg"))
README = Path(__file__).resolve().parents[1] / "README.md"
needs_librosa = pytest.mark.skipif(not LIBROSA, reason="needs /work/shared/audio/librosa-data")


@pytest.fixture(scope="module")
def predictor(bundle):
    return Predictor.load(bundle, system=1, provider="auto", threads=1)


def test_predict_file_returns_a_full_prediction(predictor):
    path = LIBROSA[0] if LIBROSA else None
    p = predictor.predict_file(path, title="Trumpet loop", tags="brass, loop", description="<b>A</b> short phrase")
    assert p.label in CODES and p.parent == parent_of(p.label) and 0.0 <= p.score <= 1.0
    assert p.probabilities.shape == (23,) and abs(p.probabilities.sum() - 1) < 1e-5
    assert len(p.top_k) == 5 and p.top_k[0].probability >= p.top_k[-1].probability
    assert [t.code for t in p.top_k] == [CODES[i] for i in np.argsort(-p.probabilities, kind="stable")[:5]]
    assert p.label_name == CLASSES[CODES.index(p.label)].name and p.parent_name == PARENT_NAMES[p.parent]
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
    from bst_rt.runtime.clip import Clip

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


# ---- providers, lifetime ---------------------------------------------------------------------------------------
def test_onnxruntime_provider_lists_pass_through_and_bad_names_are_one_clear_error(bundle):
    import onnxruntime as ort

    with pytest.raises(ProviderError, match="unknown onnxruntime provider 'FooExecutionProvider'"):
        Predictor.load(bundle, providers=["FooExecutionProvider"])
    with pytest.raises(ProviderError, match="unknown provider 'tpu'"):
        Predictor.load(bundle, provider="tpu")
    absent = [n for n in ("TensorrtExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider")
              if n not in ort.get_available_providers()]
    if absent:  # known to onnxruntime, but not in this build
        with pytest.raises(ProviderError, match=f"{absent[0]}' is not available"):
            Predictor.load(bundle, providers=[absent[0]])
    with pytest.raises(ProviderError, match="bad providers entry"):
        Predictor.load(bundle, providers=[("CPUExecutionProvider",)])
    # onnxruntime's own form, (name, options), passes through; the context manager closes the sessions
    options = ("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})
    with Predictor.load(bundle, providers=[options], threads=1) as predictor:
        assert set(predictor.providers.values()) == {"cpu"} and predictor.provider == "cpu"
        sessions = [predictor.audio_encoder.session, predictor.heads]
        assert all(s.get_providers() == ["CPUExecutionProvider"] for s in sessions)
    assert predictor.heads is None and predictor.audio_encoder is None
    with pytest.raises(BstError, match="closed"):
        predictor.predict_file(None, title="a dog barks")


# ---- in-memory audio ------------------------------------------------------------------------------------------
@needs_librosa
def test_predict_waveform_equals_predict_file_on_the_same_audio(predictor, tmp_path):
    import soundfile as sf

    meta = dict(title="Waltz", tags="music piano", description="a short waltz")
    samples, rate = sf.read(LIBROSA[0], dtype="float32")  # what an application holding the audio would pass
    from_file = predictor.predict_file(LIBROSA[0], **meta)
    in_memory = predictor.predict_waveform(samples, rate, **meta)
    assert (in_memory.label, in_memory.score) == (from_file.label, from_file.score)
    assert np.array_equal(in_memory.probabilities, from_file.probabilities)
    # multi-channel, another rate, and integer PCM: the array and the same samples written to a WAV agree
    t = np.arange(int(2.5 * 44100)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sign(np.sin(2 * np.pi * 3 * t))], axis=1)
    for subtype, data in (("FLOAT", stereo.astype(np.float32)), ("PCM_16", (stereo * 32767).astype(np.int16))):
        path = tmp_path / f"stereo_{subtype}.wav"
        sf.write(path, data, 44100, subtype=subtype)
        a, b = predictor.predict_file(path, **meta), predictor.predict_waveform(data, 44100, **meta)
        assert (a.label, a.score) == (b.label, b.score) and np.array_equal(a.probabilities, b.probabilities), subtype
    assert predictor.predict_waveform(None, 44100, **meta).fallback == "missing audio"
    for bad, rate_hz, why in ((np.zeros((2, 3, 4)), 44100, "shape"), (np.zeros(0), 44100, "empty"),
                              (stereo, 10, "outside the supported"), (np.array(["a"]), 44100, "numeric")):
        with pytest.raises(AudioError, match=why):
            predictor.predict_waveform(bad, rate_hz)


# ---- embeddings -----------------------------------------------------------------------------------------------
@needs_librosa
def test_embeddings_are_unit_vectors_and_match_the_encoders(predictor):
    import soundfile as sf

    audio = predictor.embed_audio(LIBROSA[1])
    samples, rate = sf.read(LIBROSA[1], dtype="float32")
    assert audio.shape == (512,) and audio.dtype == np.float32
    assert abs(float(np.linalg.norm(audio)) - 1.0) < 1e-4
    assert np.array_equal(audio, predictor.embed_audio(samples, rate))
    reference = predictor.audio_encoder.embed_files([LIBROSA[1]])[0]  # the encoder's own file path
    assert np.abs(audio - reference).max() < 1e-6
    text = predictor.embed_text("a dog barking in a park")
    assert text.shape == (512,) and abs(float(np.linalg.norm(text)) - 1.0) < 1e-4
    err = np.abs(text - predictor.text_encoder.embed(["a dog barking in a park"])[0]).max()
    print(f"embed_text vs TextEncoder.embed max abs diff {err:.2e}")
    assert err < 1e-5
    with pytest.raises(BstError, match="sample_rate"):
        predictor.embed_audio(samples)
    with pytest.raises(AudioError):
        predictor.embed_audio(Path("/nonexistent.wav"))


# ---- no per-call state ----------------------------------------------------------------------------------------
def test_no_per_call_state_two_threads_agree_with_sequential(predictor, synth_corpus):
    clips = read_eval_package(synth_corpus.eval).clips[:4]
    before = {k: (type(v), id(v)) for k, v in vars(predictor).items()}
    snapshot = {k: repr(v) for k, v in vars(predictor).items() if isinstance(v, (int, str, bool, list, dict, set))}
    sequential = [list(predictor.predict_clips(clips, batch_size=2)), list(predictor.predict_clips(clips[::-1]))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(lambda c, n: list(predictor.predict_clips(c, batch_size=n)), clips, 2),
                   pool.submit(lambda c: list(predictor.predict_clips(c)), clips[::-1])]
        concurrent = [f.result() for f in futures]
    for seq, par in zip(sequential, concurrent):
        assert [(p.id, p.label, p.score, p.fallback) for p in seq] == [(p.id, p.label, p.score, p.fallback) for p in par]
    assert {k: (type(v), id(v)) for k, v in vars(predictor).items()} == before
    assert {k: repr(v) for k, v in vars(predictor).items() if k in snapshot} == snapshot


def test_clip_text_fields_are_optional():
    clip = Clip(id="x")
    assert (clip.title, clip.tags, clip.description, clip.audio_path) == ("", "", "", None)


# ---- the README's example, run as written against the test bundle ---------------------------------------------
@needs_librosa
def test_readme_python_api_example_runs(bundle):
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert '"my-bundle/"' in code and '"my-sound.ogg"' in code  # the placeholders this test substitutes
    code = code.replace('"my-bundle/"', repr(str(bundle))).replace('"my-sound.ogg"', repr(str(LIBROSA[0])))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    printed = out.getvalue()
    assert "running on" in printed and "cosine" in printed and "23 classes" in printed
    assert re.search(r"^b \S+ missing audio$", printed, re.M)
