"""SystemPolicy serialisation, the parent-safe override rule (seed eq. 3), and `decide_items` deciding each item
alone: the same labels and scores for any batch, order or company, with no set-level limit on overrides."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataclasses import replace as dataclass_replace

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.policy import (
    Decisions, RankerChoice, SystemPolicy, apply_policy, decide, decide_items, ensemble_probs, item_evidence,
    load_policies, no_ranker, ranker_choice, save_policies,
)
from bst_rt.runtime.taxonomy import NUM_CLASSES, PARENT_INDEX


def _policies() -> list[SystemPolicy]:
    w12 = {"baseline": 0.25, "v2mix": 0.5, "text-only": 0.125, "audio-only": 0.125}
    return [
        SystemPolicy(1, "primary", "top12", w12, True, k=4, tau=0.07, cross_parent_tau=0.3,
                     cross_parent_min_score=0.6, max_override_share=0.1, tuning={"grid": [0.1, 0.2]}),
        SystemPolicy(2, "balanced", "top12", w12, True, k=3, tau=0.15, max_override_share=0.05),
        SystemPolicy(3, "top5", "top5", {"v2mix": 0.6, "baseline": 0.4}, False),
        SystemPolicy(4, "lowrisk", "lowrisk", {"v2mix": 1.0}, False, description="light external"),
    ]


def test_policies_round_trip_through_json(tmp_path):
    path = tmp_path / "systems.json"
    save_policies(path, _policies()[::-1])
    loaded = load_policies(path)
    assert loaded == _policies()
    assert [p.system_id for p in loaded] == [1, 2, 3, 4]
    assert loaded[0].families == ("audio-only", "baseline", "text-only", "v2mix")


def test_policy_rejects_bad_values(tmp_path):
    with pytest.raises(BstError, match="sum to 1"):
        SystemPolicy(1, "x", "top12", {"a": 0.7, "b": 0.7}, True)
    with pytest.raises(BstError, match="max_override_share"):
        SystemPolicy(1, "x", "top12", {"a": 1.0}, True, max_override_share=1.5)
    with pytest.raises(BstError, match="unknown SystemPolicy fields"):
        SystemPolicy.from_dict({**_policies()[0].to_dict(), "fold": 3})
    (tmp_path / "s.json").write_text('{"schema": "other", "systems": []}')
    with pytest.raises(BstError, match="schema"):
        load_policies(tmp_path / "s.json")


def _random_choice(rng: np.random.Generator, n: int) -> RankerChoice:
    base = rng.integers(0, NUM_CLASSES, n)
    choice = np.where(rng.random(n) < 0.4, base, rng.integers(0, NUM_CLASSES, n))
    s_b, s_r = rng.random(n), rng.random(n)
    s_r = np.where(choice == base, s_b, np.maximum(s_r, s_b))  # the ranker's pick scores at least the base
    return RankerChoice(base, rng.random(n), s_b, choice, s_r)


def _eq3_reference(c: RankerChoice, i: int, tau: float, ctau: float, cmin: float) -> int:
    """Eq. 3 written out for one item, as the seed report states it."""
    margin = c.choice_score[i] - c.base_score[i]
    same = PARENT_INDEX[c.choice[i]] == PARENT_INDEX[c.base[i]]
    parent_safe = same or (margin > ctau and c.choice_score[i] >= cmin)
    return int(c.choice[i]) if margin > tau and parent_safe else int(c.base[i])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), tau=st.floats(0, 0.5), ctau=st.floats(0, 1.0), cmin=st.floats(0, 1.0))
def test_decide_follows_eq3_item_by_item(seed, tau, ctau, cmin):
    c = _random_choice(np.random.default_rng(seed), 200)
    out = decide(c, tau=tau, cross_parent_tau=ctau, cross_parent_min_score=cmin)
    expected = [_eq3_reference(c, i, tau, ctau, cmin) for i in range(200)]
    np.testing.assert_array_equal(out.labels, expected)
    np.testing.assert_array_equal(out.overridden, out.labels != c.base)
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    crossed = out.overridden & (PARENT_INDEX[out.labels] != PARENT_INDEX[c.base])
    assert (out.margin[crossed] > max(tau, ctau)).all() and (c.choice_score[crossed] >= cmin).all()


def _items(rng: np.random.Generator, n: int) -> dict:
    """Random evidence of n items (some without audio or text) for a two-family policy with fallbacks."""
    probs = {f: rng.dirichlet(np.ones(NUM_CLASSES) * 0.3, size=n) for f in ("a", "b", "text-only", "audio-only")}
    return dict(family_probs=probs, text_embeddings=rng.normal(size=(n, 8)), class_text_embeddings=rng.normal(
        size=(NUM_CLASSES, 8)), audio_present=rng.random(n) > 0.15, text_present=rng.random(n) > 0.15)


def _score_rows(rows: np.ndarray) -> np.ndarray:
    """A stand-in ranker: a fixed function of each row alone (as a tree ensemble is)."""
    w = np.linspace(-1.0, 1.0, rows.shape[1])
    return 1.0 / (1.0 + np.exp(-(rows.astype(np.float64) @ w)))


def _subset(ev: dict, idx) -> dict:
    return {**ev, "family_probs": {f: p[idx] for f, p in ev["family_probs"].items()},
            "text_embeddings": ev["text_embeddings"][idx], "audio_present": ev["audio_present"][idx],
            "text_present": ev["text_present"][idx]}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60), share=st.floats(0, 1))
def test_decide_items_decides_each_item_alone_whatever_the_batch(seed, n, share):
    rng = np.random.default_rng(seed)
    policy = SystemPolicy(1, "p", "top12", {"a": 0.6, "b": 0.4}, True, k=3, tau=0.0, cross_parent_tau=0.05,
                          cross_parent_min_score=0.2, max_override_share=share)
    ev = _items(rng, n)
    ens = ensemble_probs(policy, ev["family_probs"])
    whole = decide_items(policy, ens, score_rows=_score_rows, **ev)
    alone = [decide_items(policy, ens[[i]], score_rows=_score_rows, **_subset(ev, [i])) for i in range(n)]
    np.testing.assert_array_equal(whole.labels, [a.labels[0] for a in alone])
    np.testing.assert_array_equal(whole.scores, [a.scores[0] for a in alone])
    order = rng.permutation(n)
    shuffled = decide_items(policy, ens[order], score_rows=_score_rows, **_subset(ev, order))
    np.testing.assert_array_equal(shuffled.labels, whole.labels[order])
    np.testing.assert_array_equal(shuffled.scores, whole.scores[order])
    # no set-level limit: the share is a tuning constraint, so the overrides are exactly eq. 3's, at any share
    cands_choice = [decide_items(dataclass_replace(policy, max_override_share=1.0), ens[[i]], score_rows=_score_rows,
                                 **_subset(ev, [i])).overridden[0] for i in range(n)]
    np.testing.assert_array_equal(whole.overridden, cands_choice)
    # fallback items are decided by the fallback family's distribution
    no_audio = ~ev["audio_present"]
    np.testing.assert_allclose(whole.probabilities[no_audio], ev["family_probs"]["text-only"][no_audio])


def test_decide_items_overrides_more_items_than_the_share_when_eq3_says_so():
    """A limit per set of items would have kept at most floor(share * n) overrides; eq. 3 alone keeps them all."""
    rng = np.random.default_rng(1)
    n = 40
    policy = SystemPolicy(1, "p", "top12", {"a": 0.5, "b": 0.5}, True, k=3, tau=0.0, cross_parent_tau=0.0,
                          cross_parent_min_score=0.0, max_override_share=0.0)
    ev = _items(rng, n)
    ens = ensemble_probs(policy, ev["family_probs"])
    prefer_second = lambda rows: (rows[:, 1] == 1).astype(np.float64)  # noqa: E731  (ens_rank 1 scores 1)
    out = decide_items(policy, ens, score_rows=prefer_second, **ev)
    assert out.overridden.sum() == n  # every item's rank-2 candidate wins by margin 1 > tau
    np.testing.assert_array_equal(out.labels, np.argsort(-out.probabilities, axis=1, kind="stable")[:, 1])


def test_ranker_choice_and_systems_without_ranker():
    rng = np.random.default_rng(5)
    ens = rng.dirichlet(np.ones(NUM_CLASSES), size=3)
    cands = [np.argsort(-e)[:m] for e, m in zip(ens, (3, 1, 4))]
    scores = np.array([0.2, 0.5, 0.1, 0.9, 0.3, 0.3, 0.8, 0.1])
    offsets = np.array([0, 3, 4, 8])
    c = ranker_choice(ens, cands, scores, offsets)
    np.testing.assert_array_equal(c.base, ens.argmax(axis=1))
    np.testing.assert_array_equal(c.choice, [cands[0][1], cands[1][0], cands[2][2]])
    np.testing.assert_allclose(c.margin, [0.3, 0.0, 0.5])
    no_rank = SystemPolicy(3, "top5", "top5", {"a": 1.0}, False, max_override_share=1.0)
    out = apply_policy(no_rank, c)
    assert isinstance(out, Decisions) and not out.overridden.any()
    np.testing.assert_array_equal(out.labels, ens.argmax(axis=1))
    np.testing.assert_allclose(out.scores, ens.max(axis=1))
    np.testing.assert_array_equal(apply_policy(no_rank, no_ranker(ens)).labels, out.labels)


def test_item_evidence_uses_the_fallback_family_when_a_modality_is_missing():
    rng = np.random.default_rng(6)
    probs = {f: rng.dirichlet(np.ones(NUM_CLASSES)) for f in ("a", "b", "text-only", "audio-only")}
    p = SystemPolicy(1, "p", "top12", {"a": 0.75, "b": 0.25}, True)
    ens, fam = item_evidence(p, probs, True, True)
    np.testing.assert_allclose(ens, 0.75 * probs["a"] + 0.25 * probs["b"])
    assert fam.shape == (2, NUM_CLASSES)
    ens, fam = item_evidence(p, probs, False, True)
    np.testing.assert_array_equal(ens, probs["text-only"])
    ens, fam = item_evidence(p, probs, True, False)
    np.testing.assert_array_equal(ens, probs["audio-only"])
    assert fam.shape == (1, NUM_CLASSES)
