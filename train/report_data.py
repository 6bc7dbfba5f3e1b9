"""The numbers of `bst-train report RUN --html DIR`, read once from the run folder into one JSON document.

The pool report (train/report_html.py) draws every figure and table from this document and writes it beside the page
as `report.json`; each value is taken from the run's own files (registry.json, ensemble.json, the folds' heldout.npz,
ranker/ranker.json, dev_eval.json), so the page and those files agree by construction and a test can check both.
"""
from __future__ import annotations

import numpy as np

from bst_rt.runtime.taxonomy import NUM_CLASSES

from .dev_eval import TABLE3_COLUMNS
from .ensemble import not_pooled
from .folds import N_FOLDS
from .report import section_of
from .run import DEV_EVAL_JSON, HELDOUT_NPZ, RANKER_DIR, RANKER_JSON, Run, load_run, read_json

#: reliability-diagram bins over the top-class probability
N_BINS = 10


def family_document(run: Run, name: str, barred: dict[str, str]) -> dict:
    e = run.registry["families"][name]
    folds = e.get("folds", {})
    doc = {"section": section_of(e), "group": e.get("group", ""), "status": e["status"],
           "excluded": e.get("excluded"), "not_pooled": barred.get(name),
           "hF_mean": e.get("hF_mean"), "hF_std": e.get("hF_std"), "hF_oof": e.get("hF_oof"),
           "val_hF_mean": e.get("val_hF_mean"), "folds": {}}
    for k, s in sorted(folds.items(), key=lambda kv: int(kv[0])):
        doc["folds"][k] = {key: s.get(key) for key in ("hF", "val_hF", "val_top_class_share", "val_finite",
                                                       "temperature", "best_epoch", "epochs_run",
                                                       "val_accuracy_curve")}
    return doc


def reliability(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Top-class confidence vs accuracy in `N_BINS` equal-width bins, and the expected calibration error."""
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, N_BINS - 1)
    count = np.bincount(which, minlength=N_BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, N_BINS) / count
        accuracy = np.bincount(which, right.astype(float), N_BINS) / count
    filled = count > 0
    ece = float(np.sum(count[filled] * np.abs(mean_conf[filled] - accuracy[filled])) / max(len(labels), 1))
    return {"confidence": [float(v) if f else None for v, f in zip(mean_conf, filled)],
            "accuracy": [float(v) if f else None for v, f in zip(accuracy, filled)],
            "count": count.tolist(), "ece": ece}


def calibration_document(run: Run, name: str) -> dict | None:
    """Reliability before and after temperature scaling, the held-out rows of the five folds pooled."""
    parts = []
    for k in range(N_FOLDS):
        path = run.fold_dir(name, k) / HELDOUT_NPZ
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            parts.append((z["probs"], z["calibrated_probs"], z["labels"]))
    raw, cal, labels = (np.concatenate([p[i] for p in parts]) for i in range(3))
    if raw.shape[1] != NUM_CLASSES or not (np.isfinite(raw).all() and np.isfinite(cal).all()):
        return None
    return {"n": int(len(labels)), "before": reliability(raw, labels), "after": reliability(cal, labels)}


def pool_document(run: Run, name: str, pool: dict) -> dict:
    groups = {f: run.registry["families"][f].get("group", "") for f in pool["weights"]}
    shares: dict[str, float] = {}
    for f, w in pool["weights"].items():
        shares[groups[f]] = shares.get(groups[f], 0.0) + float(w)
    caps = {g: float(pool.get("group_caps", {}).get(g, pool.get("group_cap", 1.0))) for g in shares}
    return {"weights": {f: float(w) for f, w in pool["weights"].items()}, "groups": groups,
            "group_shares": shares, "group_caps": caps, "caps_relaxed": bool(pool.get("caps_relaxed", False)),
            "hF_oof": pool.get("hF"), "hF_nested_mean": pool.get("hF_nested_mean"),
            "hF_nested_std": pool.get("hF_nested_std"), "hF_fold_mean": pool.get("hF_fold_mean")}


def ranker_document(run: Run) -> dict | None:
    path = run.path / RANKER_DIR / RANKER_JSON
    if not path.is_file():
        return None
    meta = read_json(path)
    nested = meta.get("nested_cv", {})
    systems = {}
    for sid in ("1", "2"):
        r = nested.get(f"system{sid}")
        if r is None:
            continue
        systems[sid] = {"hF": r.get("hF"), "nested_override_rate": r.get("override_share"),
                        "max_override_share": r.get("max_override_share"),
                        "heldout_override_rate": meta.get("thresholds", {}).get(sid, {}).get("override_share"),
                        "fixed": r.get("fixed"), "broken": r.get("broken"),
                        "changed_pairs": r.get("changed_pairs"),
                        "tau_per_fold": [f.get(f"system{sid}", {}).get("tau") for f in nested.get("per_fold", [])]}
    return {"ensemble_oof_hF": nested.get("ensemble_oof_hF"), "systems": systems}


def dev_eval_document(run: Run) -> dict | None:
    path = run.path / DEV_EVAL_JSON
    if not path.is_file():
        return None
    report = read_json(path)
    nested = read_json(run.path / RANKER_DIR / RANKER_JSON).get("nested_cv", {}) \
        if (run.path / RANKER_DIR / RANKER_JSON).is_file() else {}
    return {"protocol": report.get("protocol"), "items": report.get("items"),
            "systems": {str(sid): {**{c: r.get(c) for c in TABLE3_COLUMNS},
                                   "override_share": r.get("override_share"),
                                   "nested_hF": nested.get(f"system{sid}", {}).get("hF")}
                        for sid, r in report.get("systems", {}).items()}}


def pool_report_document(run_dir) -> dict:
    run = load_run(run_dir)
    reg = run.registry
    barred = not_pooled(run)
    families = {name: family_document(run, name, barred) for name in reg["families"]}
    return {"run": str(run.path), "n_dev": reg.get("n_dev"), "seed": reg.get("seed"),
            "devices": reg.get("devices") or ["cpu"], "families": families,
            "pools": {name: pool_document(run, name, pool) for name, pool in run.ensembles.items()},
            "calibration": {name: c for name in run.families if (c := calibration_document(run, name))},
            "ranker": ranker_document(run), "dev_eval": dev_eval_document(run)}
