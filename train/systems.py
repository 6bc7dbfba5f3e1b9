"""The four submitted systems (seed Table 2) and `bst-train rank`, which freezes them into RUN/ranker/ and RUN/systems.json.

1 primary  — top-12 ensemble + ranker, parent-safe override (cross-parent only above stricter thresholds);
2 balanced — top-12 ensemble + ranker under lower correction pressure: half the override share, same-parent only;
3 top5     — top-5 ensemble, no ranker;
4 lowrisk  — the low-risk pool (light external / text-diversity weights), no ranker.
Thresholds are chosen by CV for hF subject to the held-out override rate staying at or below the system's share (a
constraint of tuning; inference decides each item alone), and the nested estimate is reported next to the ensemble
it reranks. Each ranker system's `tuning` records both held-out override rates: at its frozen thresholds over the
five-fold CV (`heldout_override_rate`, <= the share by construction) and on the nested outer folds
(`nested_override_rate`, measured).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bst_rt.runtime.atomic import atomic_write_bytes
from bst_rt.runtime.datasets import read_dev_dataset
from bst_rt.runtime.errors import BstError, DataError
from bst_rt.runtime.layout import EMBEDDING_DIM, class_text_path
from bst_rt.runtime.policy import (AUDIO_ONLY, TEXT_ONLY, SystemPolicy, decide_items, load_policies, normalise_weights,
                                   save_policies)

from . import ranker as ranker_module
from .run import RANKER_DIR, RANKER_JSON, RANKER_MODEL, SYSTEMS_JSON, load_run, read_json, write_json

RANKER_POOL = "top12"


@dataclass(frozen=True)
class RankOptions:
    k: int = 3
    max_override_share: float = 0.15
    seed: int = 0


def tuning_specs(opts: RankOptions) -> dict[int, ranker_module.TuningSpec]:
    return {1: ranker_module.TuningSpec(opts.max_override_share, allow_cross_parent=True),
            2: ranker_module.TuningSpec(opts.max_override_share / 2, allow_cross_parent=False)}


def make_policies(pools: dict, thresholds: dict[int, ranker_module.Thresholds], opts: RankOptions,
                  nested: dict | None = None) -> list[SystemPolicy]:
    """Freeze the four systems from the run's pool weights, the chosen thresholds and the measured held-out
    override rates (`nested`: `ranker.nested_estimate`'s report)."""
    missing = [p for p in (RANKER_POOL, "top5", "lowrisk") if p not in pools]
    if missing:
        raise BstError(f"ensemble.json has no pool(s) {missing}; run `bst-train train` to completion first")
    w = {p: pool_weights(pools, p) for p in pools}
    specs = tuning_specs(opts)

    def ranked(sid: int, name: str, description: str) -> SystemPolicy:
        th = thresholds[sid]
        return SystemPolicy(sid, name, RANKER_POOL, w[RANKER_POOL], True, k=opts.k, tau=th.tau,
                            cross_parent_tau=th.cross_parent_tau, cross_parent_min_score=th.cross_parent_min_score,
                            max_override_share=specs[sid].max_override_share, description=description,
                            tuning={"cv_hF": th.hF, "heldout_override_rate": th.override_share,
                                    "nested_override_rate": (nested or {}).get(f"system{sid}", {})
                                    .get("override_share")})

    return [
        ranked(1, "primary", "Top-12 calibrated ensemble with candidate ranker and parent-safe override"),
        ranked(2, "balanced", "Top-12 ensemble and ranker with lower correction pressure (same-parent, half share)"),
        SystemPolicy(3, "top5", "top5", w["top5"], False, k=opts.k,
                     description="Top-5 calibrated ensemble without candidate reranking"),
        SystemPolicy(4, "lowrisk", "lowrisk", w["lowrisk"], False, k=opts.k,
                     description="Low-risk ensemble with light external and text-diversity components, no ranker"),
    ]


def pool_weights(pools: dict, pool: str) -> dict[str, float]:
    """A pool's positive weights, renormalised (ensemble.json may round them)."""
    return normalise_weights(pools[pool]["weights"], f"ensemble.json: pool {pool!r}")


def load_systems(run_dir: Path | str) -> list[SystemPolicy]:
    path = Path(run_dir) / SYSTEMS_JSON
    if not path.is_file():
        raise BstError(f"{path}: missing; run `bst-train rank RUN DATA` first")
    return load_policies(path)


def load_ranker(run_dir: Path | str):
    """The fitted sklearn ranker and its ranker.json (train side only; the runtime reads the ONNX graph)."""
    import joblib

    folder = Path(run_dir) / RANKER_DIR
    if not (folder / RANKER_MODEL).is_file():
        raise BstError(f"{folder / RANKER_MODEL}: missing; run `bst-train rank RUN DATA` first")
    meta = read_json(folder / RANKER_JSON)
    blob = (folder / RANKER_MODEL).read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["model_sha256"]:
        raise BstError(f"{folder / RANKER_MODEL}: sha256 differs from ranker.json; rerun `bst-train rank`")
    return joblib.load(io.BytesIO(blob)), meta


def class_text_embeddings(data_dir: Path | str) -> np.ndarray:
    path = class_text_path(data_dir)
    if not path.is_file():
        raise DataError(f"{path}: missing; `bst-train embed` (or `bst-train synth --with-features`) writes it")
    emb = np.load(path, allow_pickle=False)
    if emb.shape != (23, EMBEDDING_DIM):
        raise DataError(f"{path}: expected [23, {EMBEDDING_DIM}] class-description embeddings, got {emb.shape}")
    return emb.astype(np.float32)


def oof_by_dataset_order(run, families: list[str], ids: list[str], labels: np.ndarray) -> dict[str, np.ndarray]:
    """Each family's calibrated OOF probabilities, re-ordered to the dataset's clips (ids and labels cross-checked)."""
    out = {}
    for fam in families:
        oof = run.oof(fam)
        probs = oof["calibrated_probs"] if "calibrated_probs" in oof else oof["probs"]
        pos = {str(i): r for r, i in enumerate(oof["ids"])}
        try:
            rows = np.array([pos[i] for i in ids])
        except KeyError as exc:
            raise BstError(f"{run.family_dir(fam) / 'oof.npz'}: no OOF row for clip {exc.args[0]}") from None
        if "labels" in oof and not np.array_equal(np.asarray(oof["labels"])[rows], labels):
            raise BstError(f"{run.family_dir(fam) / 'oof.npz'}: labels differ from the dataset's (another dataset?)")
        out[fam] = np.asarray(probs, dtype=np.float64)[rows]
    return out


def _oof_base(run, pools: dict, pool: str, ds, labels: np.ndarray, text_present: np.ndarray) -> np.ndarray:
    """A no-ranker system's out-of-fold predictions, with the same missing-modality fallbacks as deployment."""
    policy = SystemPolicy(0, pool, pool, pool_weights(pools, pool), False)
    oof = oof_by_dataset_order(run, sorted(set(policy.families) | {TEXT_ONLY, AUDIO_ONLY}), ds.ids, labels)
    no_text = np.zeros((len(labels), 0), dtype=np.float32)  # a system without ranker reads no text features
    return decide_items(policy, None, oof, no_text, np.zeros((23, 0)), ds.embedding_mask("audio"), text_present,
                        None).labels


def rank_run(run_dir: Path | str, data_dir: Path | str, opts: RankOptions = RankOptions(), log: ranker_module.Log = print) -> dict:
    """`bst-train rank`: candidate rows from OOF probabilities, nested estimate, final ranker, frozen systems."""
    import joblib

    from .ensemble import check_pools, why_no_pool
    from .folds import official_folds

    run = load_run(run_dir)
    pools = run.ensembles
    if RANKER_POOL not in pools:
        why = why_no_pool(run) or "run `bst-train train` to completion (or again, to reselect the pools)"
        raise BstError(f"{run.path}: ensemble.json has no {RANKER_POOL!r} pool: {why}")
    check_pools(run, pools)
    ds = read_dev_dataset(Path(data_dir))
    labels = ds.label_indices
    provisional = SystemPolicy(1, "primary", RANKER_POOL, pool_weights(pools, RANKER_POOL), True, k=opts.k)
    families = sorted(set(provisional.families) | {TEXT_ONLY, AUDIO_ONLY})
    oof = oof_by_dataset_order(run, families, ds.ids, labels)
    text_present = np.array([bool(c.text.strip()) for c in ds.clips])
    folds = ranker_module.fold_of_items(len(labels), [f.test for f in official_folds(labels)])
    class_text = class_text_embeddings(data_dir)
    rows = ranker_module.build_rows(provisional, oof, ds.load_embeddings("text", missing="zero"), text_present,
                         ds.embedding_mask("audio"), class_text, labels, folds)
    log(f"candidate rows: {ranker_module.describe_rows(rows)}")

    specs = tuning_specs(opts)
    nested = ranker_module.nested_estimate(rows, specs, opts.seed, log)
    for sid, pool in ((3, "top5"), (4, "lowrisk")):  # no ranker: the held-out figure is the pool's OOF prediction
        if pool in pools:
            nested[f"system{sid}"] = {**ranker_module.table3(labels, _oof_base(run, pools, pool, ds, labels, text_present)),
                                      "override_share": 0.0, "kind": "out-of-fold"}
    model, thresholds = ranker_module.fit_final(rows, specs, opts.seed)
    buf = io.BytesIO()
    joblib.dump(model, buf)
    blob = buf.getvalue()
    policies = make_policies(pools, thresholds, opts, nested)
    meta = {
        "feature_names": ranker_module.feature_names(),
        "k": opts.k,
        "pool": RANKER_POOL,
        "families": list(provisional.families),
        "estimator": type(model).__name__,
        "params": {**ranker_module.HGB_PARAMS, "random_state": opts.seed},
        "model_file": RANKER_MODEL,
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "class_text_embeddings_sha256": hashlib.sha256(class_text.tobytes()).hexdigest(),
        "data_fingerprint": ds.fingerprint(),
        "rows": ranker_module.describe_rows(rows),
        "thresholds": {str(s): t.as_dict() for s, t in thresholds.items()},
        "nested_cv": nested,
    }
    folder = run.path / RANKER_DIR
    atomic_write_bytes(folder / RANKER_MODEL, blob)
    write_json(folder / RANKER_JSON, meta)
    save_policies(run.path / SYSTEMS_JSON, policies)
    from .dev_eval_folds import fit_fold_chains

    fit_fold_chains(run.path, data_dir, opts, log)  # the five chains fold-respecting dev-as-eval runs
    return meta


def format_heldout_table(meta: dict, policies: list[SystemPolicy] | None = None) -> str:
    """Table 3's columns (percent) on held-out predictions: nested-CV ranker systems, out-of-fold no-ranker ones."""
    nested = meta["nested_cv"]
    names = {p.system_id: p.name for p in policies or []}
    lines = [f"held-out figures ({meta['rows']['items']} clips; ranker: nested 5-fold CV; others: out-of-fold)",
             f"{'system':<18}{'hF':>8}{'flat':>8}{'top-level':>11}{'cross-parent':>14}{'overrides':>11}"
             f"{'fixed/broke':>13}"]
    base = {**nested.get("ensemble_oof", {}), "override_share": 0.0}
    for sid in (0, 1, 2, 3, 4):
        r = base if sid == 0 else nested.get(f"system{sid}")
        if r is None or "accuracy" not in r:
            continue
        label = "top12, no ranker" if sid == 0 else f"{sid} {names.get(sid, '')}"
        fixed = f"{r['fixed']}/{r['broken']}" if "fixed" in r else "-"
        lines.append(f"{label:<18}{100 * r['hF']:>8.2f}{100 * r['accuracy']:>8.2f}{100 * r['parent_accuracy']:>11.2f}"
                     f"{100 * r['cross_parent_error']:>14.2f}{100 * r['override_share']:>10.1f}%{fixed:>13}")
    lines.append(f"true class among the ranker's candidates: {100 * meta['rows']['candidate_recall']:.1f}%")
    return "\n".join(lines)

