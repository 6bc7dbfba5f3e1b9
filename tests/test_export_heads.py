"""The fused heads graph and the ranker graph against their torch / sklearn sources, and the export's parity gate."""
from __future__ import annotations

import numpy as np
import pytest

from bst_rt.runtime.datasets import read_dev_dataset
from bst_rt.runtime.candidate_features import NUM_FEATURES, candidate_features, stack_features
from bst_rt.runtime.policy import AUDIO_ONLY, TEXT_ONLY, ensemble_probs, item_evidence

TOL = 1e-5


@pytest.fixture(scope="module")
def heads_setup(ranked_run, tmp_path_factory):
    from bst_rt.export import heads as heads_module
    from bst_rt.train.run import load_run
    from bst_rt.train.systems import load_systems

    run = load_run(ranked_run.run)
    policies = load_systems(ranked_run.run)
    layout = heads_module.make_layout({p.pool: p.weights for p in policies}, always=(TEXT_ONLY, AUDIO_ONLY))
    heads = heads_module.build_heads(run, layout)
    path = heads_module.export_heads(heads, tmp_path_factory.mktemp("heads") / "heads.onnx")
    ds = read_dev_dataset(ranked_run.data)
    emb = tuple(ds.load_embeddings(k, missing="zero") for k in ("audio", "text", "text_masked"))
    return run, policies, layout, heads, path, emb, ranked_run.data


def _ort(path, audio, text, masked):
    from bst_rt.runtime.session import make_session

    session = make_session(path, provider="cpu")
    feeds = {"audio_embedding": audio, "text_embedding": text, "masked_text_embedding": masked}
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def test_heads_graph_matches_the_torch_chain(heads_setup):
    """family_probs = mean over folds of softmax(logits/T) (train.models.family_probs); pool_probs = policy weights."""
    from bst_rt.train.models import family_probs
    from bst_rt.train.run import load_fold_models

    run, policies, layout, _, path, (audio, text, masked), _ = heads_setup
    chain = {f: family_probs(load_fold_models(run, f), audio, text, masked) for f in layout.families}
    fam, pool = _ort(path, audio, text, masked)
    fam_err = max(float(np.abs(fam[:, i] - chain[f]).max()) for i, f in enumerate(layout.families))
    by_pool = {p.pool: p for p in policies}
    pool_err = max(float(np.abs(pool[:, j] - ensemble_probs(by_pool[name], chain)).max())
                   for j, name in enumerate(layout.pools))
    print(f"heads vs torch chain on {len(audio)} dev items: family {fam_err:.2e}, pool {pool_err:.2e} (tol {TOL:g})")
    assert fam.shape == (len(audio), len(layout.families), 23)
    assert fam_err <= TOL and pool_err <= TOL
    assert np.allclose(fam.sum(-1), 1, atol=1e-5)


def test_heads_graph_items_do_not_depend_on_the_batch(heads_setup):
    *_, path, (audio, text, masked), _ = heads_setup
    full = _ort(path, audio[:9], text[:9], masked[:9])[0]
    singles = np.concatenate([_ort(path, audio[i:i + 1], text[i:i + 1], masked[i:i + 1])[0] for i in range(9)])
    err = float(np.abs(full - singles).max())
    print(f"heads batch 9 vs batch 1: {err:.2e}")
    assert err <= 1e-6


def test_ranker_graph_matches_sklearn_on_real_candidate_rows(heads_setup, tmp_path):
    from bst_rt.export import heads as heads_module
    from bst_rt.export import ranker as ranker_module
    from bst_rt.train.systems import class_text_embeddings, load_ranker

    run, policies, layout, heads, _, (audio, text, masked), data = heads_setup
    model, meta = load_ranker(run.path)
    policy = next(p for p in policies if p.use_ranker)
    fam = heads_module.torch_heads(heads, audio, text, masked)[0]
    class_text = class_text_embeddings(data)
    items = []
    for i in range(len(audio)):
        present = bool(np.any(text[i]))
        ens, sel = item_evidence(policy, {f: fam[i, j] for j, f in enumerate(layout.families)}, True, present)
        items.append(candidate_features(ens, sel, text[i] if present else None, class_text,
                                        audio_present=True, text_present=present, k=policy.k))
    rows, _ = stack_features(items)
    path = ranker_module.export_ranker(model, NUM_FEATURES, tmp_path / "ranker.onnx")
    from bst_rt.runtime.session import make_session

    label, probs = make_session(path, provider="cpu").run(["label", "probabilities"], {ranker_module.INPUT_NAME: rows})
    want_label, want_probs = ranker_module.sklearn_ranker(model, rows)
    err = float(np.abs(probs - want_probs).max())
    print(f"ranker vs sklearn on {len(rows)} candidate rows: max |dp| {err:.2e}, labels equal {np.mean(label == want_label):.4f}")
    assert probs.dtype == np.float32 and probs.shape == (len(rows), 2)
    assert np.array_equal(label, want_label)
    assert err <= TOL


def test_export_gate_refuses_a_graph_that_disagrees_with_its_source(heads_setup):
    """A graph validated against a source it was not exported from fails, like one over tolerance would."""
    import torch

    from bst_rt.export import heads as heads_module
    from bst_rt.export.validate import ParityError, validate_graph

    _, _, layout, heads, path, (audio, text, masked), _ = heads_setup
    feeds = {"audio_embedding": audio[:8], "text_embedding": text[:8], "masked_text_embedding": masked[:8]}
    with torch.no_grad():
        first = next(heads.parameters())
        first.add_(0.05)  # the source drifts after export
        try:
            with pytest.raises(ParityError, match="heads: output .* differs from its source"):
                validate_graph("heads", path, feeds,
                               lambda: dict(zip(heads_module.OUTPUT_NAMES, heads_module.torch_heads(heads, audio[:8], text[:8], masked[:8]))))
        finally:
            first.sub_(0.05)
    record = validate_graph("heads", path, feeds,
                            lambda: dict(zip(heads_module.OUTPUT_NAMES, heads_module.torch_heads(heads, audio[:8], text[:8], masked[:8]))))
    assert max(record["max_abs_diff"].values()) <= TOL
