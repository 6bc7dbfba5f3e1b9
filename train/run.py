"""The run folder: the one contract between training and everything that reads a trained pool.

Layout (docs/ARCHITECTURE.md, "Run folder"): `registry.json` is the index; `families/<family>/fold<k>/` holds
checkpoint.pt, args.json, config.snapshot.json, heldout.npz and calibration.json, then `fold.json` last, which marks
the fold complete — an interrupted pool resumes at the first fold without one; `families/<family>/oof.npz` the
calibrated out-of-fold probabilities; `ensemble.json` the selected pools; `ranker/` and `systems.json` what
`bst-train rank` froze. Every module that reads or writes these files goes through this one (`read_json` /
`write_json` for the JSON documents, `Run` for the rest), so the layout and its file names are spelled once.
The models it loads run through `models.py` (the forward pass, `family_probs`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bst_rt.runtime.atomic import atomic_open, atomic_write_text
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.taxonomy import NUM_CLASSES

from . import calibrate
from .data import Arrays, PoolData
from .families import FamilyConfig
from .fold_train import FoldOutcome
from .folds import N_FOLDS, Fold
from .models import build_model

REGISTRY_SCHEMA = 1
REGISTRY_JSON = "registry.json"
ENSEMBLE_JSON = "ensemble.json"
FAMILIES_DIR = "families"
OOF_NPZ = "oof.npz"
FOLD_JSON = "fold.json"  # written last: the fold is complete
CHECKPOINT = "checkpoint.pt"
ARGS_JSON = "args.json"
CONFIG_SNAPSHOT = "config.snapshot.json"
HELDOUT_NPZ = "heldout.npz"
CALIBRATION_JSON = "calibration.json"
TEACHER_CACHE = "cs_teacher.npz"
RANKER_DIR = "ranker"
RANKER_JSON = "ranker.json"
RANKER_MODEL = "ranker.joblib"
SYSTEMS_JSON = "systems.json"
DEV_EVAL_JSON = "dev_eval.json"


# ---------------------------------------------------------------- JSON documents


def write_json(path: Path, obj: Any) -> None:
    """Atomically, indented, one trailing newline: every JSON document of the run folder is written this way."""
    atomic_write_text(Path(path), json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> Any:
    """A run-folder JSON document; a corrupt one is a one-line error naming the file (a missing one raises
    FileNotFoundError, which callers turn into their own 'run X first' line)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BstError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


# ---------------------------------------------------------------- the run, opened for reading


def family_dir(run_dir: Path, family: str) -> Path:
    return Path(run_dir) / FAMILIES_DIR / family


def fold_dir(run_dir: Path, family: str, k: int) -> Path:
    return family_dir(run_dir, family) / f"fold{k}"


def fold_complete(run_dir: Path, family: str, k: int) -> bool:
    return (fold_dir(run_dir, family, k) / FOLD_JSON).is_file()


@dataclass
class Run:
    """A run folder opened for reading: registry, ensemble pools and paths."""

    path: Path
    registry: dict
    ensembles: dict

    def family_dir(self, family: str) -> Path:
        return family_dir(self.path, family)

    def fold_dir(self, family: str, k: int) -> Path:
        return fold_dir(self.path, family, k)

    @property
    def families(self) -> list[str]:
        return [f for f, e in self.registry["families"].items() if e["status"] == "done"]

    def oof(self, family: str) -> dict[str, np.ndarray]:
        with np.load(self.family_dir(family) / OOF_NPZ, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def config(self, family: str) -> FamilyConfig:
        return FamilyConfig(**self.registry["families"][family]["config"])


def load_run(run_dir: Path | str) -> Run:
    path = Path(run_dir)
    reg_path = path / REGISTRY_JSON
    if not reg_path.is_file():
        raise BstError(f"{path}: no {REGISTRY_JSON} (not a `bst-train train` run folder)")
    registry = read_json(reg_path)
    if registry.get("schema") != REGISTRY_SCHEMA:
        raise BstError(f"{reg_path}: registry schema {registry.get('schema')!r}, expected {REGISTRY_SCHEMA}")
    ens_path = path / ENSEMBLE_JSON
    ensembles = read_json(ens_path)["pools"] if ens_path.is_file() else {}
    return Run(path, registry, ensembles)


# ---------------------------------------------------------------- fold models


def load_fold_dir(d: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, float]:
    """The model of one complete fold folder in eval mode on `device`, with its fitted temperature (checkpoints hold
    CPU tensors and load on any device). Needs only the fold folder, not the registry."""
    if not (d / FOLD_JSON).is_file():
        raise BstError(f"{d}: fold not complete (run `bst-train train` again to resume)")
    ckpt = torch.load(d / CHECKPOINT, map_location=device, weights_only=True)
    model = build_model(FamilyConfig(**read_json(d / CONFIG_SNAPSHOT))).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, float(read_json(d / CALIBRATION_JSON)["temperature"])


def load_fold_model(run: Run | Path | str, family: str, k: int,
                    device: torch.device | str = "cpu") -> tuple[torch.nn.Module, float]:
    """One fold model in eval mode on `device` with its fitted temperature."""
    run = run if isinstance(run, Run) else load_run(run)
    return load_fold_dir(run.fold_dir(family, k), device)


def load_fold_models(run: Run | Path | str, family: str) -> list[tuple[torch.nn.Module, float]]:
    """The family's five fold models in eval mode, each with its fitted temperature."""
    run = run if isinstance(run, Run) else load_run(run)
    return [load_fold_model(run, family, k) for k in range(N_FOLDS)]


# ---------------------------------------------------------------- writing a fold and the OOF table


def write_fold(d: Path, cfg: FamilyConfig, fold: Fold, data: PoolData, out: FoldOutcome, scores: dict,
               args: dict) -> np.ndarray:
    """Write one fold folder, fold.json last. Returns the held-out rows' calibrated probabilities (what the OOF
    table holds), so the loop need not read them back."""
    d.mkdir(parents=True, exist_ok=True)
    with atomic_open(d / CHECKPOINT, "wb") as fh:
        torch.save({"state_dict": out.state_dict, "family": cfg.name, "fold": fold.k, "seed": args["seed"]}, fh)
    write_json(d / ARGS_JSON, args)
    write_json(d / CONFIG_SNAPSHOT, cfg.to_dict())
    test = data.dev.take(fold.test)
    probs = calibrate.calibrated_probs(out.test_logits, 1.0)
    cal = calibrate.calibrated_probs(out.test_logits, scores["temperature"])
    with atomic_open(d / HELDOUT_NPZ, "wb") as fh:
        np.savez(fh, ids=test.ids.astype(str), labels=test.labels, rows=fold.test, logits=out.test_logits,
                 probs=probs, calibrated_probs=cal, val_logits=out.val_logits, val_labels=data.dev.labels[fold.val])
    write_json(d / CALIBRATION_JSON, {"temperature": scores["temperature"], "fitted_on": "validation",
                                      "n_val": int(len(fold.val))})
    write_json(d / FOLD_JSON, scores)
    return cal


def heldout_calibrated(d: Path) -> tuple[np.ndarray, np.ndarray]:
    """A written fold's held-out dev rows and their calibrated probabilities (for folds trained by an earlier call or
    a Ray worker)."""
    with np.load(d / HELDOUT_NPZ, allow_pickle=False) as z:
        return z["rows"], z["calibrated_probs"]


def write_oof(run_dir: Path, family: str, folds: list[Fold], dev: Arrays,
              heldout: dict[int, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Assemble and write the family's OOF table from its folds' held-out calibrated probabilities (`heldout`: those
    this process holds, by fold; the others are read from their fold folders). Returns what it wrote."""
    heldout = heldout or {}
    probs = np.zeros((len(dev), NUM_CLASSES), np.float32)
    fold_of = np.full(len(dev), -1, np.int64)
    for f in folds:
        rows, cal = (f.test, heldout[f.k]) if f.k in heldout else heldout_calibrated(fold_dir(run_dir, family, f.k))
        probs[rows] = cal
        fold_of[f.test] = f.k
    table = {"ids": dev.ids.astype(str), "labels": dev.labels, "probs": probs, "fold": fold_of}
    with atomic_open(family_dir(run_dir, family) / OOF_NPZ, "wb") as fh:
        np.savez(fh, **table)
    return table
