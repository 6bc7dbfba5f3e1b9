"""The ranker's candidate features: inference-safe by construction (no forbidden inputs) and a function of one item."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

from bst_rt.runtime import candidate_features as features_module
from bst_rt.runtime.taxonomy import NUM_CLASSES, PARENT_INDEX

# seed report §2.5: sample/fold ids, whole-dev confusion statistics, was-a-model-right flags
_FORBIDDEN = re.compile(r"(^|_)(id|ids|fold|folds|label|labels|target|truth|true|correct|right|wrong|error|errors|"
                        r"confusion|confusions|index|sample|oof|heldout)($|_)")


def _items(rng: np.random.Generator, n: int, *, families: int = 4, vary_families: bool = False):
    """Random but realistic items: peaked ensemble distributions, family distributions around them, some missing
    modalities, L2-normalised embeddings."""
    items = []
    for _ in range(n):
        f = int(rng.integers(1, families + 1)) if vary_families else families
        alpha = np.full(NUM_CLASSES, 0.3)
        alpha[rng.integers(NUM_CLASSES)] = 5.0
        fam = rng.dirichlet(alpha, size=f).astype(np.float32)
        ens = fam.mean(axis=0)
        emb = rng.normal(size=512).astype(np.float32)
        items.append(dict(ens=ens, fam=fam, emb=emb / np.linalg.norm(emb),
                          audio=bool(rng.random() > 0.1), text=bool(rng.random() > 0.1)))
    return items


@pytest.fixture(scope="module")
def class_emb() -> np.ndarray:
    e = np.random.default_rng(7).normal(size=(NUM_CLASSES, 512)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _alone(item, class_emb, k=3):
    return features_module.candidate_features(item["ens"], item["fam"], item["emb"], class_emb,
                                audio_present=item["audio"], text_present=item["text"], k=k)


def _batch(items, class_emb, k=3):
    return features_module.batch_candidate_features(
        np.stack([it["ens"] for it in items]), [it["fam"] for it in items], [it["emb"] for it in items], class_emb,
        audio_present=[it["audio"] for it in items], text_present=[it["text"] for it in items], k=k)


def test_feature_names_hold_nothing_forbidden():
    assert len(set(features_module.FEATURE_NAMES)) == len(features_module.FEATURE_NAMES) == features_module.NUM_FEATURES
    bad = [name for name in features_module.FEATURE_NAMES if _FORBIDDEN.search(name)]
    assert not bad, f"forbidden feature names: {bad}"


@pytest.mark.parametrize("func", [features_module.candidate_features, features_module.batch_candidate_features, features_module.candidate_indices])
def test_feature_functions_take_no_id_fold_or_label(func):
    params = list(inspect.signature(func).parameters)
    bad = [p for p in params if _FORBIDDEN.search(p)]
    assert not bad, f"{func.__name__} takes forbidden arguments {bad}"
    allowed = {"ensemble_probs", "family_probs", "text_embedding", "text_embeddings", "class_text_embeddings",
               "audio_present", "text_present", "k"}
    assert set(params) <= allowed, f"{func.__name__}: unexpected inputs {set(params) - allowed}"


def test_features_of_an_item_alone_equal_those_inside_any_batch(class_emb):
    rng = np.random.default_rng(0)
    items = _items(rng, 60, vary_families=True)
    alone = [_alone(it, class_emb) for it in items]
    for trial in range(4):
        perm = rng.permutation(len(items))
        for size in (1, 7, 60):
            for start in range(0, len(items), size):
                chunk = perm[start:start + size]
                got = _batch([items[i] for i in chunk], class_emb)
                for i, g in zip(chunk, got):
                    np.testing.assert_array_equal(g.candidates, alone[i].candidates)
                    np.testing.assert_array_equal(g.features, alone[i].features)
    # and the stacked matrix splits back into exactly the per-item rows
    stacked, offsets = features_module.stack_features(alone)
    for i, a in enumerate(alone):
        np.testing.assert_array_equal(stacked[offsets[i]:offsets[i + 1]], a.features)


def test_candidates_are_ensemble_topk_plus_family_top1(class_emb):
    rng = np.random.default_rng(1)
    for it in _items(rng, 40):
        out = _alone(it, class_emb, k=3)
        topk = np.argsort(-it["ens"])[:3]
        expected = set(topk) | set(it["fam"].argmax(axis=1))
        assert set(out.candidates.tolist()) == expected
        assert len(out.candidates) == len(expected)
        assert out.base == int(np.argmax(it["ens"]))
        assert out.features.dtype == np.float32 and out.features.shape == (len(expected), features_module.NUM_FEATURES)
        assert np.isfinite(out.features).all()


def test_feature_values_match_their_definitions(class_emb):
    rng = np.random.default_rng(2)
    col = {name: i for i, name in enumerate(features_module.FEATURE_NAMES)}
    for it in _items(rng, 20):
        it["text"], it["audio"] = True, True
        out = _alone(it, class_emb)
        c = out.candidates
        np.testing.assert_allclose(out.features[:, col["ens_prob"]], it["ens"][c], rtol=1e-6)
        np.testing.assert_allclose(out.features[:, col["fam_prob_max"]], it["fam"][:, c].max(axis=0), rtol=1e-6)
        cos = (class_emb[c] @ it["emb"]) / np.linalg.norm(class_emb[c], axis=1)
        np.testing.assert_allclose(out.features[:, col["semantic_cos"]], cos, atol=1e-6)
        shares = (PARENT_INDEX[c] == PARENT_INDEX[out.base]).astype(np.float32)
        np.testing.assert_array_equal(out.features[:, col["shares_base_parent"]], shares)
        assert out.features[0, col["ens_rank"]] == 0 and (out.features[1:, col["ens_rank"]] > 0).all()


def test_missing_text_zeroes_semantic_columns_and_sets_the_flag(class_emb):
    it = _items(np.random.default_rng(3), 1)[0]
    it.update(text=False, audio=False)
    out = _alone(it, class_emb)
    idx = [features_module.FEATURE_NAMES.index(n) for n in ("semantic_cos", "semantic_rank", "semantic_cos_minus_base")]
    assert (out.features[:, idx] == 0).all()
    assert (out.features[:, features_module.FEATURE_NAMES.index("text_missing")] == 1).all()
    assert (out.features[:, features_module.FEATURE_NAMES.index("audio_missing")] == 1).all()
    # None embedding behaves like absent text
    none = features_module.candidate_features(it["ens"], it["fam"], None, class_emb, audio_present=False, text_present=True, k=3)
    np.testing.assert_array_equal(none.features, out.features)
