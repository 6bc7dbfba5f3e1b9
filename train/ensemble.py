"""Ensemble selection on calibrated out-of-fold probabilities (docs/method.md, "Eq. 2").

Greedy forward selection with replacement (Caruana et al. 2004): start from the best single family, repeatedly add
the family whose inclusion gives the highest hF, and keep the best bag seen. Weights = counts / bag size, so they
are non-negative and sum to one. A per-group cap bounds the share any family group (v2mix core, prior/hierarchy,
external, ...) may hold, so seed-level or group-level overfitting to the dev folds cannot take over the pool. If no
capped bag reaches the best single family's hF, the best single family is returned and the pool says so.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.metrics import hierarchical_f1
from bst_rt.runtime.policy import weighted_sum

from .run import ENSEMBLE_JSON, Run, write_json


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
    """Eq. 2 on OOF probabilities (runtime.policy.weighted_sum, the definition the deployed chain uses)."""
    return weighted_sum(oof, weights)


# ---------------------------------------------------------------- pool-level: screening and ensemble.json

COLLAPSE_SHARE = 0.5  # one class taking half of a fold's validation predictions (23 classes) is a collapse
FAR_BELOW = 0.15  # absolute validation hF below the pool median


def screen_families(registry: dict, collapse_share: float = COLLAPSE_SHARE, far_below: float = FAR_BELOW) -> None:
    """Mark abnormal done families `excluded` (with the reason) so no pool selects them; the report shows why.

    Judged on validation behaviour only (docs/method.md, "Abnormal families"): training loss, and each fold's inner
    validation split (`val_finite`, `val_top_class_share`, `val_hF`). Test-fold scores are what the report and the ensemble
    selection measure; letting them also decide exclusion would select on the figures we then report. A family
    entry without validation figures (not in this call, written by an older version) keeps its verdict."""
    done = {f: e for f, e in registry["families"].items() if e["status"] == "done" and "val_hF_mean" in e}
    means = [e["val_hF_mean"] for e in done.values() if np.isfinite(e["val_hF_mean"])]
    median = float(np.median(means)) if means else float("nan")
    for family, e in done.items():
        folds = e["folds"]
        reasons = []
        bad = [k for k, s in folds.items() if not s["val_finite"]]
        if bad:
            reasons.append(f"non-finite loss or validation logits (fold {', '.join(bad)})")
        shares = [(k, s["val_top_class_share"]) for k, s in folds.items() if np.isfinite(s["val_top_class_share"])]
        worst = max(shares, key=lambda kv: kv[1], default=(None, 0.0))
        if worst[1] >= collapse_share:
            reasons.append(f"collapse towards one class ({worst[1]:.0%} of fold {worst[0]} "
                           "validation predictions)")
        if np.isfinite(e["val_hF_mean"]) and e["val_hF_mean"] < median - far_below:
            reasons.append(f"validation hF far below the pool ({e['val_hF_mean']:.3f} vs median {median:.3f})")
        e["excluded"] = "; ".join(reasons) or None


NOT_CLEAN = "takes BSD35k-CS uploader labels as clean (they are not clean); trained and reported, never pooled"


def not_pooled(run: Run) -> dict[str, str]:
    """Done families that no pool may hold, with the reason: abnormal (`excluded`) or trained on CS labels as clean."""
    out = {}
    for f in run.families:
        e = run.registry["families"][f]
        if e.get("excluded"):
            out[f] = f"excluded as abnormal: {e['excluded']}"
        elif run.config(f).treats_cs_as_clean:
            out[f] = NOT_CLEAN
    return out


def pool_candidates(run: Run) -> list[str]:
    """Families the ensemble selection may use."""
    barred = not_pooled(run)
    return [f for f in run.families if f not in barred]


def why_no_pool(run: Run) -> str | None:
    """One line saying why a run has no ensemble (None when it can have one)."""
    if pool_candidates(run):
        return None
    entries = run.registry["families"]
    unfinished = [f for f, e in entries.items() if e["status"] not in ("done", "skipped")]
    if unfinished:
        return f"families not finished ({', '.join(unfinished)}): run `bst-train train` again to resume"
    if not run.families:
        return "no family was trained (all skipped: " + "; ".join(
            f"{f}: {e.get('reason', '?')}" for f, e in entries.items()) + ")"
    barred = not_pooled(run)
    if all(entries[f].get("excluded") for f in barred):
        reasons = "; ".join(f"{f}: {entries[f]['excluded']}" for f in barred)
        return f"every trained family was excluded as abnormal ({reasons})"
    reasons = "; ".join(f"{f}: {why}" for f, why in barred.items())
    return f"every trained family is barred from the pools ({reasons})"


def check_pools(run: Run, pools: dict) -> None:
    """Refuse pools (e.g. an ensemble.json from an older version) that hold a family no pool may hold."""
    barred = not_pooled(run)
    for name, pool in pools.items():
        bad = sorted(f for f, w in pool["weights"].items() if float(w) > 0 and f in barred)
        if bad:
            raise BstError(f"{run.path / ENSEMBLE_JSON}: pool {name!r} holds {', '.join(bad)} ({barred[bad[0]]}); "
                           "run `bst-train train` again on this run to reselect the pools")


def write_ensembles(run: Run, pools: dict[str, PoolSpec] | None = None, oofs: dict[str, dict] | None = None) -> dict:
    """Select every pool on the run's calibrated OOF probabilities and write RUN/ensemble.json. `oofs`: OOF tables
    the caller holds (the training loop, which just wrote them); the others are read from the run folder."""
    pools = pools or POOLS
    families = pool_candidates(run)
    barred = not_pooled(run)
    if not families:
        doc = {"objective": "none", "no_pool": why_no_pool(run), "not_pooled": barred, "pools": {}}
        write_json(run.path / ENSEMBLE_JSON, doc)
        return {}
    oofs = {f: (oofs or {}).get(f) or run.oof(f) for f in families}
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
           "not_pooled": barred, "pools": out}
    write_json(run.path / ENSEMBLE_JSON, doc)
    return {k: {"hF": v["hF"], "weights": v["weights"]} for k, v in out.items()}
