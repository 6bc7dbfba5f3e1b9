"""The fold job: train one (family, fold), score it and write its fold folder. The sequential pool loop (pool.py)
and the Ray tasks (pool_ray.py) both run it, so a fold's files do not depend on which of them ran it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bst_rt.runtime.metrics import hierarchical_f1
from bst_rt.runtime.taxonomy import NUM_CLASSES

from . import calibrate, teacher
from .data import PoolData
from .families import FamilyConfig
from .fold_train import EpochHook, FoldOutcome, fold_terms, train_fold
from .folds import N_FOLDS, Fold
from .models import family_probs
from .run import CHECKPOINT, FOLD_JSON, HELDOUT_NPZ, TEACHER_CACHE, fold_dir, load_fold_dir, read_json, write_fold


def family_seed(seed: int, family: str, k: int) -> int:
    """Distinct, reproducible seed per (pool seed, family, fold)."""
    return seed * 100_003 + int(hashlib.sha256(family.encode()).hexdigest()[:6], 16) % 10_000 * 10 + k


def validation_scores(val_logits: np.ndarray, labels_val: np.ndarray, trained_finite: bool) -> dict:
    """What the abnormal-family screen reads (docs/method.md, "Abnormal families"): the inner split that early
    stopping and calibration already saw, never the test fold, so a family's exclusion is a training-time decision."""
    finite = trained_finite and bool(np.isfinite(val_logits).all())
    if not finite:
        return {"val_hF": float("nan"), "val_finite": False, "val_top_class_share": float("nan")}
    pred = val_logits.argmax(1)
    share = np.bincount(pred, minlength=NUM_CLASSES).max() / max(len(pred), 1)
    return {"val_hF": float(hierarchical_f1(labels_val, pred)), "val_finite": True,
            "val_top_class_share": float(share)}


def _fold_scores(out: FoldOutcome, labels_val: np.ndarray, labels_test: np.ndarray) -> dict:
    temperature = calibrate.fit_temperature(out.val_logits, labels_val)
    pred = out.test_logits.argmax(1)
    share = np.bincount(pred, minlength=NUM_CLASSES).max() / max(len(pred), 1)
    finite = out.finite and bool(np.isfinite(out.test_logits).all())
    return {**validation_scores(out.val_logits, labels_val, out.finite),
        "hF": float(hierarchical_f1(labels_test, pred)) if finite else float("nan"),
        "accuracy": float((pred == labels_test).mean()),
        "temperature": temperature,
        "nll_test_raw": calibrate.nll(out.test_logits, labels_test) if finite else float("nan"),
        "nll_test_calibrated": calibrate.nll(out.test_logits, labels_test, temperature) if finite else float("nan"),
        "best_val_accuracy": out.best_val_acc,
        "epochs_run": out.epochs_run,
        "best_epoch": out.best_epoch,
        "finite": finite,
        "top_class_share": float(share),
    }


def written_scores(d: Path) -> dict:
    """A complete fold folder's scores (fold.json); a fold written before validation figures were recorded gets
    them derived from its stored validation logits."""
    scores = read_json(d / FOLD_JSON)
    if "val_hF" in scores:
        return scores
    with np.load(d / HELDOUT_NPZ, allow_pickle=False) as z:
        return {**scores, **validation_scores(z["val_logits"], z["val_labels"], bool(scores.get("finite", True)))}


def _teacher_probs(run: Path, cfg: FamilyConfig, fold: Fold, data: PoolData,
                   device: torch.device | None = None) -> np.ndarray:
    d = fold_dir(run, cfg.cs.teacher, fold.k)

    def compute() -> np.ndarray:
        return family_probs([load_fold_dir(d, device or "cpu")], *data.cs.inputs())

    key = f"{data.cs.fingerprint}:{hashlib.sha256((d / CHECKPOINT).read_bytes()).hexdigest()}"
    return teacher.cached_cs_probs(d / TEACHER_CACHE, key, compute)


def fold_line(i: int, n: int, family: str, k: int, scores: dict) -> str:
    return (f"[{i}/{n}] {family} fold {k + 1}/{N_FOLDS}: hF {scores['hF']:.4f} "
            f"(epochs {scores['epochs_run']}, T {scores['temperature']:.2f})")


@dataclass(frozen=True)
class WrittenFold:
    """What a fold job leaves besides its folder: the fold's scores (fold.json) and its held-out rows' calibrated
    probabilities (the loop's OOF table holds them without reading them back)."""

    scores: dict
    heldout: np.ndarray


def train_and_write_fold(out: Path, cfg: FamilyConfig, fold: Fold, data: PoolData, seed: int,
                         device: torch.device | None = None, on_epoch: EpochHook | None = None) -> WrittenFold:
    """Train one (family, fold) and write its fold folder (fold.json last). `seed` is the member's seed
    (`family@seed`). Depends only on the run folder (the teacher's fold-k checkpoint) and its arguments: the
    sequential loop and the Ray tasks both call it, so their fold folders are the same."""
    tprobs = _teacher_probs(out, cfg, fold, data, device) if cfg.cs.mode == "teacher" else None
    terms = fold_terms(cfg, fold, data, tprobs)
    fseed = family_seed(seed, cfg.name, fold.k)
    result = train_fold(cfg, terms, data.dev.take(fold.val), data.dev.take(fold.test), fseed, device, on_epoch)
    scores = _fold_scores(result, data.dev.labels[fold.val], data.dev.labels[fold.test])
    args = {"family": cfg.name, "fold": fold.k, "seed": fseed, "pool_seed": seed,
            "n_train": int(len(fold.train)), "n_val": int(len(fold.val)), "n_test": int(len(fold.test)),
            "terms": result.term_sizes, "teacher": cfg.cs.teacher if cfg.cs.mode == "teacher" else None,
            "data_fingerprints": data.fingerprints(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}
    cal = write_fold(fold_dir(out, cfg.name, fold.k), cfg, fold, data, result, scores, args)
    return WrittenFold(scores, cal)
