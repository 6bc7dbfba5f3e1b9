"""The fold chains: one frozen chain per official fold, for fold-respecting development-as-evaluation
(docs/method.md, "Development as evaluation"), where every development clip is predicted, label-blind, by a chain
that never trained on it.

Clips of official fold k go through the chain frozen from fold k: the fold-k checkpoint of every family (trained on
the other folds; temperature fitted on its validation split), pool weights selected on the other folds' out-of-fold
probabilities, and a ranker plus override thresholds fitted on the other folds (thresholds by an inner CV there, as
in the nested estimate). The fold only chooses which frozen chain runs; it is never a feature. `bst-train rank`
freezes the five chains into RUN/fold_chains/ (`fit_fold_chains`); `FoldRespectingChain` runs them.

The all-folds chain (`dev_eval.TorchChain`, or the exported bundle) averages five fold models of which four trained
on each clip: it is the deployment check (does the shipped chain run end to end), not an estimate of the score.
"""
from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import joblib

from bst_rt.runtime.atomic import atomic_write_bytes
from bst_rt.runtime.clip import Clip
from bst_rt.runtime.datasets import read_dev_dataset
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.policy import AUDIO_ONLY, TEXT_ONLY, SystemPolicy, load_policies, save_policies

from . import ranker as ranker_module
from .dev_eval import SystemOutput, TorchChain
from .ensemble import POOLS, pool_candidates, select_weights
from .folds import official_folds
from .run import RANKER_JSON, RANKER_MODEL, SYSTEMS_JSON, load_fold_model, load_run, read_json, write_json
from .systems import (RANKER_POOL, RankOptions, class_text_embeddings, make_policies, oof_by_dataset_order,
                      pool_weights, tuning_specs)

Log = Callable[[str], None]

FOLD_CHAINS_DIR = "fold_chains"
INDEX_JSON = "fold_chains.json"
SCHEMA = "bst-fold-chains-v1"
PROTOCOL = "fold-respecting"


def fold_pools(oof: dict[str, np.ndarray], labels: np.ndarray, groups: dict[str, str]) -> dict[str, dict]:
    """Every pool selected exactly as `write_ensembles` does, on the rows given (one fold's training folds)."""
    pools = {}
    for name, spec in POOLS.items():
        if any(spec.group_caps.get(g, spec.group_cap) > 0 for g in groups.values()):
            pools[name] = {"weights": select_weights(oof, labels, groups, spec)["weights"]}
    return pools


def fit_fold_chains(run_dir: Path | str, data_dir: Path | str, opts: RankOptions | None = None,
                    log: Log = print) -> dict:
    """Freeze one chain per official fold k from what never saw fold k; writes RUN/fold_chains/. Returns the index
    (RUN/fold_chains/fold_chains.json as written)."""
    opts = opts or RankOptions()
    run = load_run(run_dir)
    ds = read_dev_dataset(Path(data_dir))
    labels = ds.label_indices
    selectable = pool_candidates(run)
    groups = {f: run.registry["families"][f]["group"] for f in selectable}
    oof = oof_by_dataset_order(run, sorted(set(selectable) | {TEXT_ONLY, AUDIO_ONLY}), ds.ids, labels)
    folds = ranker_module.fold_of_items(len(labels), [f.test for f in official_folds(labels)])
    text = ds.load_embeddings("text", missing="zero")
    text_present = np.array([bool(c.text.strip()) for c in ds.clips])
    audio_present = ds.embedding_mask("audio")
    class_text = class_text_embeddings(data_dir)
    out_dir = run.path / FOLD_CHAINS_DIR
    index = {"schema": SCHEMA, "protocol": PROTOCOL, "data_fingerprint": ds.fingerprint(), "k": opts.k,
             "max_override_share": opts.max_override_share, "seed": opts.seed, "folds": {}}
    for k in np.unique(folds):
        train = folds != k
        pools = fold_pools({f: oof[f][train] for f in selectable}, labels[train], groups)
        policy = SystemPolicy(1, "primary", RANKER_POOL, pool_weights(pools, RANKER_POOL), True, k=opts.k)
        rows = ranker_module.build_rows(policy, oof, text, text_present, audio_present, class_text, labels, folds)
        choice, train_labels = ranker_module.cv_choices(rows, train, opts.seed)
        thresholds = {sid: ranker_module.tune_thresholds(choice, train_labels, spec) for sid, spec in tuning_specs(opts).items()}
        model = ranker_module.fit_ranker(rows.features[rows.rows_of(train)], rows.target[rows.rows_of(train)], opts.seed)
        blob = _dump(model)
        d = out_dir / f"fold{int(k)}"
        atomic_write_bytes(d / RANKER_MODEL, blob)
        meta = {"feature_names": ranker_module.feature_names(), "k": opts.k, "pool": RANKER_POOL,
                "model_sha256": hashlib.sha256(blob).hexdigest(),
                "thresholds": {str(s): t.as_dict() for s, t in thresholds.items()},
                "pools": pools, "fitted_on_folds": [int(j) for j in np.unique(folds[train])]}
        write_json(d / RANKER_JSON, meta)
        save_policies(d / SYSTEMS_JSON, make_policies(pools, thresholds, opts))
        index["folds"][str(int(k))] = [ds.ids[i] for i in np.flatnonzero(folds == k)]
        log(f"  fold chain {int(k)}: pools and ranker fitted on folds {meta['fitted_on_folds']}, "
            f"system 1 tau={thresholds[1].tau}")
    write_json(out_dir / INDEX_JSON, index)
    return index


def _dump(model: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def _load_fold(folder: Path) -> tuple[list[SystemPolicy], Any, dict]:
    """One fold's frozen policies, ranker and its metadata (sha256 checked)."""
    meta = read_json(folder / RANKER_JSON)
    blob = (folder / RANKER_MODEL).read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["model_sha256"]:
        raise BstError(f"{folder / RANKER_MODEL}: sha256 differs from {RANKER_JSON}; rerun `bst-train rank`")
    return load_policies(folder / SYSTEMS_JSON), joblib.load(io.BytesIO(blob)), meta


class FoldRespectingChain:
    """Five frozen torch chains, one per official fold; a clip goes through the chain of the fold it is held out in.

    Each per-fold chain is the all-folds `TorchChain` with its models, policies and ranker swapped for fold k's, so
    the features, evidence and decision code are exactly the deployment chain's."""

    name = "torch, fold-respecting"
    protocol = PROTOCOL

    def __init__(self, run_dir: Path | str, features_root: Path | str) -> None:
        folder = Path(run_dir) / FOLD_CHAINS_DIR
        if not (folder / INDEX_JSON).is_file():
            raise BstError(f"{folder}: no fold-respecting chains; rerun `bst-train rank RUN DATA` (it freezes them)")
        index = read_json(folder / INDEX_JSON)
        if index.get("schema") != SCHEMA:
            raise BstError(f"{folder / INDEX_JSON}: schema {index.get('schema')!r}, expected {SCHEMA}; rerun `bst-train rank`")
        base = TorchChain(run_dir, features_root)
        self.policies = base.policies
        self.fold_of = {cid: int(k) for k, ids in index["folds"].items() for cid in ids}
        self.chains: dict[int, TorchChain] = {}
        for key in index["folds"]:
            k = int(key)
            policies, ranker, meta = _load_fold(folder / f"fold{k}")
            families = sorted({f for p in policies for f in p.families}
                              | {p.fallback_audio_missing for p in policies} | {p.fallback_text_missing for p in policies})
            chain = copy.copy(base)
            chain.policies, chain.ranker, chain.ranker_meta = policies, ranker, meta
            chain.models = {f: [base.models[f][k] if f in base.models else load_fold_model(base.run, f, k)]
                            for f in families}
            self.chains[k] = chain

    def predict(self, clips: Sequence[Clip]) -> dict[int, SystemOutput]:
        unknown = [c.id for c in clips if c.id not in self.fold_of]
        if unknown:
            raise BstError(f"{len(unknown)} clip(s) are in no development fold of this run (first: {unknown[0]}); "
                           "the fold-respecting protocol predicts the run's own development set only")
        folds = np.array([self.fold_of[c.id] for c in clips], dtype=np.int64)
        n = len(clips)
        labels: dict[int, np.ndarray] = {}
        scores: dict[int, np.ndarray] = {}
        overridden: dict[int, np.ndarray] = {}
        for k in np.unique(folds):
            idx = np.flatnonzero(folds == k)
            for sid, out in self.chains[int(k)].predict([clips[i] for i in idx]).items():
                labels.setdefault(sid, np.zeros(n, dtype=np.int64))[idx] = out.labels
                scores.setdefault(sid, np.zeros(n, dtype=np.float64))[idx] = out.scores
                overridden.setdefault(sid, np.zeros(n, dtype=bool))[idx] = out.overridden
        return {sid: SystemOutput(labels[sid], scores[sid], overridden[sid]) for sid in sorted(labels)}
