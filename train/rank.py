"""`bst-train rank`: fit the candidate ranker on out-of-fold candidate rows (nested estimate first), freeze the four
systems into RUN/ranker/ and RUN/systems.json, then the five fold chains (fold_chains.py) that fold-respecting
development-as-evaluation runs. `rank_run` returns a `RankResult`.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

from bst_rt.runtime.atomic import atomic_write_bytes
from bst_rt.runtime.datasets import DevDataset, read_dev_dataset
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.policy import AUDIO_ONLY, TEXT_ONLY, SystemPolicy, decide_items, save_policies

from . import ranker as ranker_module
from .ensemble import check_pools, why_no_pool
from .fold_chains import fit_fold_chains
from .folds import official_folds
from .run import RANKER_DIR, RANKER_JSON, RANKER_MODEL, SYSTEMS_JSON, Run, load_run, write_json
from .systems import (RANKER_POOL, RankOptions, class_text_embeddings, make_policies, oof_by_dataset_order,
                      pool_weights, tuning_specs)


@dataclass(frozen=True)
class RankResult:
    """What `bst-train rank` froze: `meta` is RUN/ranker/ranker.json as written (its `nested_cv` report is `nested`,
    its candidate-row summary `rows`), `thresholds` the frozen override thresholds of the ranker systems, `policies`
    the four systems of RUN/systems.json and `fold_chains` the index of RUN/fold_chains/."""

    ranker_dir: Path
    meta: dict
    thresholds: dict[int, ranker_module.Thresholds]
    policies: list[SystemPolicy]
    fold_chains: dict

    @property
    def nested(self) -> dict:
        return self.meta["nested_cv"]

    @property
    def rows(self) -> dict:
        return self.meta["rows"]


def _oof_base(run: Run, pools: dict, pool: str, ds: DevDataset, labels: np.ndarray,
              text_present: np.ndarray) -> np.ndarray:
    """A no-ranker system's out-of-fold predictions, with the same missing-modality fallbacks as deployment."""
    policy = SystemPolicy(0, pool, pool, pool_weights(pools, pool), False)
    oof = oof_by_dataset_order(run, sorted(set(policy.families) | {TEXT_ONLY, AUDIO_ONLY}), ds.ids, labels)
    no_text = np.zeros((len(labels), 0), dtype=np.float32)  # a system without ranker reads no text features
    return decide_items(policy, None, oof, no_text, np.zeros((23, 0)), ds.embedding_mask("audio"), text_present,
                        None).labels


def rank_run(run_dir: Path | str, data_dir: Path | str, opts: RankOptions = RankOptions(),
             log: ranker_module.Log = print) -> RankResult:
    """Candidate rows from OOF probabilities, nested estimate, final ranker, frozen systems, fold chains."""
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
            nested[f"system{sid}"] = {**ranker_module.table3(labels, _oof_base(run, pools, pool, ds, labels,
                                                                               text_present)),
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
    chains = fit_fold_chains(run.path, data_dir, opts, log)  # the five chains fold-respecting dev-as-eval runs
    return RankResult(folder, meta, thresholds, policies, chains)


def format_heldout_table(result: RankResult) -> str:
    """Table 3's columns (percent) on held-out predictions: nested-CV ranker systems, out-of-fold no-ranker ones."""
    nested = result.nested
    names = {p.system_id: p.name for p in result.policies}
    lines = [f"held-out figures ({result.rows['items']} clips; ranker: nested 5-fold CV; others: out-of-fold)",
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
    lines.append(f"true class among the ranker's candidates: {100 * result.rows['candidate_recall']:.1f}%")
    return "\n".join(lines)
