"""The promise: the torch chain and the torch-free runtime give the same submission on the synthetic evaluation set.

Torch chain = laion-clap's own file pipeline and text embedding (reference embedders) → torch fold models
(`train.models.family_probs`) → the same features/policy code with the sklearn ranker (`train.dev_eval.TorchChain`).
Runtime = `bst_rt.runtime.predict.Predictor` on the exported bundle (numpy front end + ORT graphs).
"""
from __future__ import annotations

import numpy as np
import pytest

from bst_rt.runtime.atomic import atomic_save_npy
from bst_rt.runtime.datasets import read_eval_package

LABEL_AGREEMENT = 1.0
#: int8 CLAP graphs vs fp32, system 1 labels on the synthetic evaluation package (40 clips, CLAP at random weights):
#: the share that must agree. Measured 0.90 (36/40) on the session bundle; 0.85 leaves two flips of margin
INT8_LABEL_AGREEMENT = 0.85
#: per-item probabilities (the chosen label's score, and every calibrated family distribution), fp32
PROB_TOL = 1e-5


@pytest.fixture(scope="module")
def chains(bundle, clap_reference, ranked_run, synth_corpus, tmp_path_factory):
    from bst_rt.runtime.predict import Predictor
    from bst_rt.train.clap import reference_audio_embedding_from_files, reference_text_embedding
    from bst_rt.train.dev_eval import TorchChain
    from bst_rt.runtime.text import mask_class_words

    package = read_eval_package(synth_corpus.eval)
    clips = package.clips
    predictor = Predictor.load(bundle, system=1, provider="cpu")
    runtime = predictor.predict_systems(clips, (1, 2, 3, 4))
    evidence = predictor._evidence(clips)

    # the torch side's inputs, in the official features/ layout TorchChain reads
    root = tmp_path_factory.mktemp("torch_features")
    feats = root / "features"
    audio_ok = [c for c, present in zip(clips, evidence.audio_present) if present]
    audio = reference_audio_embedding_from_files(clap_reference, [c.audio_path for c in audio_ok])
    for c, e in zip(audio_ok, audio):
        atomic_save_npy(feats / "clap_audio_embeddings" / f"{c.id}.npy", e)
    with_text = [c for c in clips if c.text]
    text = reference_text_embedding(clap_reference, [c.text for c in with_text])
    masked = reference_text_embedding(clap_reference, [mask_class_words(c.text) for c in with_text])
    for c, t, m in zip(with_text, text, masked):
        atomic_save_npy(feats / "clap_text_embeddings" / f"{c.id}.npy", t)
        atomic_save_npy(feats / "clap_text_masked_embeddings" / f"{c.id}.npy", m)
    atomic_save_npy(feats / "clap_class_text_embeddings.npy", predictor.class_text)
    chain = TorchChain(ranked_run.run, root)
    torch_out = chain.predict(clips)
    return clips, runtime, torch_out, evidence, chain, predictor


def test_all_four_systems_give_identical_labels_and_scores(chains):
    clips, runtime, torch_out, *_ = chains
    for sid in (1, 2, 3, 4):
        got = np.array([p.label for p in runtime[sid]])
        from bst_rt.runtime.taxonomy import CODES

        want = np.array([CODES[i] for i in torch_out[sid].labels])
        agree = float(np.mean(got == want))
        err = float(np.abs(np.array([p.score for p in runtime[sid]]) - torch_out[sid].scores).max())
        print(f"system {sid}: label agreement {agree:.4f} over {len(clips)} clips, max |score diff| {err:.2e}")
        assert agree == LABEL_AGREEMENT
        assert err <= PROB_TOL
        assert np.array_equal([p.overridden for p in runtime[sid]], torch_out[sid].overridden)


def test_family_distributions_agree(chains):
    """Calibrated, fold-averaged distributions of every family: runtime graph outputs vs torch on laion embeddings."""
    from bst_rt.train.models import family_probs

    clips, _, _, evidence, chain, predictor = chains
    from bst_rt.runtime.datasets import DevDataset

    view = DevDataset(root=chain.features_root, name="view", metadata_path=chain.features_root, clips=list(clips))
    a, t, m = (view.load_embeddings(k, missing="zero") for k in ("audio", "text", "text_masked"))
    worst = 0.0
    for j, fam in enumerate(predictor.families):
        want = family_probs(chain.models[fam], a, t, m)
        worst = max(worst, float(np.abs(evidence.family_probs[:, j] - want).max()))
    print(f"family distributions, runtime vs torch chain: max |diff| {worst:.2e} (tol {PROB_TOL:g})")
    assert worst <= PROB_TOL


def test_fallback_items_are_predicted_by_their_fallback_family(chains):
    clips, runtime, _, evidence, _, predictor = chains
    reasons = {p.id: p.fallback for p in runtime[1] if p.fallback}
    assert any("zero-byte" in r for r in reasons.values()), "the synthetic package holds a zero-byte WAV"
    for i, p in enumerate(runtime[1]):
        if p.fallback and "audio" in p.fallback:
            j = predictor.families.index(predictor.bundle.manifest.heads.text_only_family)
            assert np.allclose(p.probabilities, evidence.family_probs[i, j], atol=1e-7)
    assert len(runtime[1]) == len(clips)


def test_int8_labels_agree_with_fp32(bundle, chains):
    from bst_rt.runtime.predict import Predictor

    clips, runtime, *_ = chains
    int8 = Predictor.load(bundle, system=1, provider="cpu", int8=True).predict_batch(clips)
    agree = float(np.mean([a.label == b.label for a, b in zip(int8, runtime[1])]))
    print(f"int8 vs fp32 runtime, system 1: label agreement {agree:.4f} over {len(clips)} clips "
          f"(threshold {INT8_LABEL_AGREEMENT})")
    assert len(int8) == len(clips)
    assert agree >= INT8_LABEL_AGREEMENT
