"""SystemPolicy serialisation and the parent-safe override rule (seed eq. 3) with its cap on overridden items."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bst.runtime.errors import BstError
from bst.runtime.policy import (
    Decisions, RankerChoice, SystemPolicy, apply_policy, decide, item_evidence, limit_overrides, load_policies,
    no_ranker, ranker_choice, save_policies,
)
from bst.runtime.taxonomy import NUM_CLASSES, PARENT_INDEX


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


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 300), share=st.floats(0, 1))
def test_override_never_exceeds_the_policy_cap(seed, n, share):
    c = _random_choice(np.random.default_rng(seed), n)
    policy = SystemPolicy(1, "p", "top12", {"a": 1.0}, True, tau=0.0, cross_parent_tau=0.0,
                          cross_parent_min_score=0.0, max_override_share=share)
    uncapped = apply_policy(policy, c, limit=False)
    capped = apply_policy(policy, c)
    assert capped.overridden.sum() <= np.floor(share * n + 1e-9)
    assert capped.override_share <= share + 1e-12
    # the kept overrides are the largest-margin ones, every other item reverts to its base prediction
    assert set(np.flatnonzero(capped.overridden)) <= set(np.flatnonzero(uncapped.overridden))
    if capped.overridden.any() and (uncapped.overridden & ~capped.overridden).any():
        assert capped.margin[capped.overridden].min() >= capped.margin[uncapped.overridden & ~capped.overridden].max()
    np.testing.assert_array_equal(capped.labels[~capped.overridden], c.base[~capped.overridden])
    np.testing.assert_array_equal(limit_overrides(capped, share).labels, capped.labels)  # idempotent


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
