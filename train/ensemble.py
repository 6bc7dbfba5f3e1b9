"""Ensemble selection on calibrated out-of-fold probabilities (seed report §2.4, eq. 2).

Greedy forward selection with replacement (Caruana et al. 2004): start from the best single family, repeatedly add
the family whose inclusion gives the highest hF, and keep the best bag seen. Weights = counts / bag size, so they
are non-negative and sum to one. A per-group cap bounds the share any family group (v2mix core, prior/hierarchy,
external, ...) may hold, so seed-level or group-level overfitting to the dev folds cannot take over the pool. If no
capped bag reaches the best single family's hF, the best single family is returned and the pool says so.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bst.runtime.atomic import atomic_write_text
from bst.runtime.metrics import hierarchical_f1


def hf_of(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(hierarchical_f1(labels, probs.argmax(axis=1)))


@dataclass
class PoolSpec:
    """Which families may enter a pool and how much weight each group may hold."""

    top_k: int | None = None
    group_cap: float = 0.5
    group_caps: dict[str, float] = field(default_factory=dict)  # overrides per group
    steps: int = 25


POOLS: dict[str, PoolSpec] = {
    "top5": PoolSpec(top_k=5),
    "top12": PoolSpec(top_k=12),
    # System 4's path: light external and text-diversity exposure, nothing dominant
    "lowrisk": PoolSpec(top_k=None, group_cap=0.4, group_caps={"external": 0.15, "text-diversity": 0.2, "noisy": 0.0}),
}


def _caps_ok(bag: Counter, groups: dict[str, str], spec: PoolSpec) -> bool:
    total = sum(bag.values())
    per_group: Counter = Counter()
    for fam, n in bag.items():
        per_group[groups[fam]] += n
    return all(n / total <= spec.group_caps.get(g, spec.group_cap) + 1e-9 for g, n in per_group.items())


def _share_after(bag: Counter, family: str, groups: dict[str, str]) -> float:
    """Share of `family`'s group in the bag once `family` is added."""
    group = groups[family]
    n_group = sum(n for f, n in bag.items() if groups[f] == group) + 1
    return n_group / (sum(bag.values()) + 1)


def select_weights(oof: dict[str, np.ndarray], labels: np.ndarray, groups: dict[str, str],
                   spec: PoolSpec) -> dict:
    """Weights {family: w} maximising hF of sum_f w_f p_f on `labels`; returns weights, hF and the reference."""
    singles = {f: hf_of(p, labels) for f, p in oof.items()}
    allowed = [f for f in sorted(singles, key=lambda f: -singles[f])
               if spec.group_caps.get(groups[f], spec.group_cap) > 0]
    if spec.top_k:
        allowed = allowed[: spec.top_k]
    if not allowed:
        raise ValueError("no family is eligible for this pool")
    best_single = allowed[0]
    bag: Counter = Counter({best_single: 1})
    acc = oof[best_single].astype(np.float64).copy()
    best = (-1.0, None)
    for _ in range(spec.steps):
        n = sum(bag.values())
        choice = None
        within = [f for f in allowed if _share_after(bag, f, groups) <= spec.group_caps.get(groups[f], spec.group_cap)]
        for f in within or allowed:
            trial = bag + Counter({f: 1})
            score = hf_of((acc + oof[f]) / (n + 1), labels)
            if choice is None or score > choice[0]:
                choice = (score, f, trial)
        score, f, bag = choice
        acc += oof[f]
        if _caps_ok(bag, groups, spec) and score > best[0]:
            best = (score, Counter(bag))
    relaxed = best[1] is None or best[0] < singles[best_single]
    if relaxed:
        best = (singles[best_single], Counter({best_single: 1}))
    total = sum(best[1].values())
    weights = {f: n / total for f, n in sorted(best[1].items(), key=lambda kv: -kv[1])}
    return {"weights": weights, "hF": best[0], "best_single": best_single,
            "best_single_hF": singles[best_single], "caps_relaxed": relaxed, "candidates": allowed}


def nested_hf(oof: dict[str, np.ndarray], labels: np.ndarray, fold: np.ndarray, groups: dict[str, str],
              spec: PoolSpec) -> list[float]:
    """Per test fold, hF of weights selected on the other four folds only: the selection's honest estimate (the
    OOF objective is optimistic because weights are chosen on the very rows they are scored on)."""
    scores = []
    for k in np.unique(fold):
        inner = fold != k
        sel = select_weights({f: p[inner] for f, p in oof.items()}, labels[inner], groups, spec)
        scores.append(hf_of(pool_probs({f: p[~inner] for f, p in oof.items()}, sel["weights"]), labels[~inner]))
    return scores


def pool_probs(oof: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    return sum(w * oof[f] for f, w in weights.items())


# ---------------------------------------------------------------- pool-level: screening and ensemble.json

COLLAPSE_SHARE = 0.5  # one class taking half of a fold's held-out predictions (23 classes) is a collapse
FAR_BELOW = 0.15  # absolute hF below the pool median


def screen_families(registry: dict, collapse_share: float = COLLAPSE_SHARE, far_below: float = FAR_BELOW) -> None:
    """Mark abnormal done families `excluded` (with the reason) so no pool selects them; the report shows why."""
    done = {f: e for f, e in registry["families"].items() if e["status"] == "done"}
    means = [e["hF_mean"] for e in done.values() if np.isfinite(e["hF_mean"])]
    median = float(np.median(means)) if means else float("nan")
    for family, e in done.items():
        folds = e["folds"]
        reasons = []
        bad = [k for k, s in folds.items() if not s["finite"]]
        if bad:
            reasons.append(f"non-finite loss or logits (fold {', '.join(bad)})")
        worst = max(folds.items(), key=lambda kv: kv[1]["top_class_share"])
        if worst[1]["top_class_share"] >= collapse_share:
            reasons.append(f"collapse towards one class ({worst[1]['top_class_share']:.0%} of fold {worst[0]} "
                           "predictions)")
        if np.isfinite(e["hF_mean"]) and e["hF_mean"] < median - far_below:
            reasons.append(f"hF far below the pool ({e['hF_mean']:.3f} vs median {median:.3f})")
        e["excluded"] = "; ".join(reasons) or None


def write_ensembles(run, pools: dict[str, PoolSpec] | None = None) -> dict:
    """Select every pool on the run's calibrated OOF probabilities and write RUN/ensemble.json."""
    pools = pools or POOLS
    families = run.selectable()
    if not families:
        doc = {"objective": "none: every family is excluded or unfinished", "pools": {}}
        atomic_write_text(run.path / "ensemble.json", json.dumps(doc, indent=2) + "\n")
        return {}
    oofs = {f: run.oof(f) for f in families}
    labels = oofs[families[0]]["labels"]
    fold = oofs[families[0]]["fold"]
    probs = {f: z["probs"].astype(np.float64) for f, z in oofs.items()}
    groups = {f: run.registry["families"][f]["group"] for f in families}
    out = {}
    for name, spec in pools.items():
        if not any(spec.group_caps.get(g, spec.group_cap) > 0 for g in groups.values()):
            continue  # nothing this pool may hold (e.g. a pool of only capped-out groups)
        sel = select_weights(probs, labels, groups, spec)
        ens = pool_probs(probs, sel["weights"])
        per_fold = [hf_of(ens[fold == k], labels[fold == k]) for k in np.unique(fold)]
        nested = nested_hf(probs, labels, fold, groups, spec)
        out[name] = {"weights": sel["weights"], "hF": sel["hF"], "hF_fold_mean": float(np.mean(per_fold)),
                     "hF_fold_std": float(np.std(per_fold)), "hF_nested_mean": float(np.mean(nested)),
                     "hF_nested_std": float(np.std(nested)), "best_single": sel["best_single"],
                     "best_single_hF": sel["best_single_hF"], "caps_relaxed": sel["caps_relaxed"],
                     "group_cap": spec.group_cap, "group_caps": spec.group_caps, "top_k": spec.top_k}
    doc = {"objective": "macro hF of the argmax of sum_f w_f * calibrated OOF probs over the whole dev set",
           "pools": out}
    atomic_write_text(run.path / "ensemble.json", json.dumps(doc, indent=2) + "\n")
    return {k: {"hF": v["hF"], "weights": v["weights"]} for k, v in out.items()}
