"""The four submitted systems (docs/method.md, "The four systems") and what `bst-train rank` (rank.py) needs to
freeze them into RUN/ranker/ and RUN/systems.json, and readers need to load them back.

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
from typing import Any

import numpy as np

from bst_rt.runtime.errors import BstError, DataError
from bst_rt.runtime.layout import EMBEDDING_DIM, class_text_path
from bst_rt.runtime.policy import SystemPolicy, load_policies, normalise_weights

from . import ranker as ranker_module
from .run import RANKER_DIR, RANKER_JSON, RANKER_MODEL, SYSTEMS_JSON, Run, read_json

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


def load_ranker(run_dir: Path | str) -> tuple[Any, dict]:
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


def oof_by_dataset_order(run: Run, families: list[str], ids: list[str], labels: np.ndarray) -> dict[str, np.ndarray]:
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
