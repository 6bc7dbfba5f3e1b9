"""The pool loop: trains every member on the five official folds, then screens the families and selects the
ensembles, writing the run folder through run.py, the contract its readers use (`load_run`, `load_fold_models`,
`family_probs` live there). Data arrays are data.py's, one fold's training fold_train.py's, member lists members.py's.

The loop keeps in memory what it has just written (fold scores, held-out probabilities, the OOF table, the registry)
instead of reading it back; it reads the run folder only for folds an earlier call or a Ray worker trained, and for
a student's teacher checkpoint (which may come from either).
"""
from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.metrics import hierarchical_f1
from bst_rt.runtime.taxonomy import NUM_CLASSES

from . import calibrate, teacher
from .data import Arrays, PoolData, arrays_fingerprint, load_arrays
from .external import load_external
from .families import FamilyConfig
from .fold_train import EpochHook, FoldOutcome, fold_terms, train_fold
from .folds import N_FOLDS, Fold, official_folds
from .members import QUICK_OVERRIDES, Member, load_pool_file, resolve_families, seed_members
from .run import (CHECKPOINT, FOLD_JSON, HELDOUT_NPZ, REGISTRY_JSON, REGISTRY_SCHEMA, TEACHER_CACHE, Run,
                  family_probs, fold_complete, fold_dir, load_fold_dir, load_fold_model, load_fold_models, load_run,
                  read_json, write_fold, write_json, write_oof)

#: names tests, bench and older callers import from here (their homes: data.py, fold_train.py, members.py, run.py)
__all__ = ["Arrays", "PoolData", "arrays_fingerprint", "load_arrays", "Run", "family_probs", "load_fold_model",
           "load_fold_models", "load_run", "QUICK_OVERRIDES", "run_pool", "train_pool", "train_and_write_fold",
           "fold_terms", "train_fold", "resolve_families", "validation_scores", "load_pool_file"]

Log = Callable[[str], None]


def family_seed(seed: int, family: str, k: int) -> int:
    """Distinct, reproducible seed per (pool seed, family, fold)."""
    return seed * 100_003 + int(hashlib.sha256(family.encode()).hexdigest()[:6], 16) % 10_000 * 10 + k


def validation_scores(val_logits: np.ndarray, labels_val: np.ndarray, trained_finite: bool) -> dict:
    """What the abnormal-family screen reads (seed §2.1: "abnormal validation behaviour"): the inner split that early
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
        "val_accuracy_curve": out.val_curve,
        "finite": finite,
        "top_class_share": float(share),
    }


def _with_validation(d: Path, scores: dict) -> dict:
    """A fold written before validation figures were recorded: derive them from its stored validation logits."""
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


def _open_registry(out: Path, data: PoolData, seed: int, configs: list[FamilyConfig]) -> dict:
    path = out / REGISTRY_JSON
    fps = data.fingerprints()
    if path.is_file():
        reg = read_json(path)
        if reg.get("data_fingerprints") != fps or reg.get("seed") != seed:
            raise BstError(f"{path}: this run was trained on other data or another seed; use a new --out")
        if reg.get("torch_threads", torch.get_num_threads()) != torch.get_num_threads():
            raise BstError(f"{path}: this run was trained with {reg['torch_threads']} torch thread(s) and the trained "
                           f"numbers depend on that count; resume with --threads {reg['torch_threads']}")
    else:
        reg = {"schema": REGISTRY_SCHEMA, "seed": seed, "data_fingerprints": fps, "n_dev": len(data.dev),
               "n_cs": len(data.cs) if data.cs is not None else 0, "cs_dropped_dev_overlap": data.cs_dropped_overlap,
               "torch": torch.__version__, "python": platform.python_version(),
               "torch_threads": torch.get_num_threads(), "families": {}}
    for cfg in configs:
        entry = reg["families"].get(cfg.name)
        if entry and entry["status"] != "skipped" and entry["config"] != cfg.to_dict():
            changed = sorted(k for k in cfg.to_dict() if entry["config"].get(k) != cfg.to_dict()[k])
            raise BstError(f"{path}: family {cfg.name!r} was trained with other options ({', '.join(changed)}); "
                           "use a new --out")
        if not entry or entry["status"] == "skipped":
            reg["families"][cfg.name] = {"status": "pending", "group": cfg.group, "config": cfg.to_dict(),
                                         "folds": {}}
    return reg


def fold_line(i: int, n: int, family: str, k: int, scores: dict) -> str:
    return (f"[{i}/{n}] {family} fold {k + 1}/{N_FOLDS}: hF {scores['hF']:.4f} "
            f"(epochs {scores['epochs_run']}, T {scores['temperature']:.2f})")


def train_and_write_fold(out: Path, cfg: FamilyConfig, fold: Fold, data: PoolData, seed: int,
                         device: torch.device | None = None, on_epoch: EpochHook | None = None) -> dict:
    """Train one (family, fold) and write its fold folder (fold.json last); returns its scores. `seed` is the
    member's seed (`family@seed`). Depends only on the run folder (the teacher's fold-k checkpoint) and its
    arguments: sequential and Ray runs both call it."""
    return _train_fold_folder(out, cfg, fold, data, seed, device, on_epoch)[0]


def _train_fold_folder(out: Path, cfg: FamilyConfig, fold: Fold, data: PoolData, seed: int,
                       device: torch.device | None = None,
                       on_epoch: EpochHook | None = None) -> tuple[dict, np.ndarray]:
    """`train_and_write_fold`, also returning the held-out calibrated probabilities it wrote (for the OOF table)."""
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
    return scores, cal


def train_pool(data: PoolData, out: Path, configs: list[FamilyConfig] | list[Member], *, seed: int = 0,
               log: Log = print, extra: dict | None = None, device: torch.device | str = "cpu", progress=None,
               ray: str | None = None, ray_options: dict | None = None) -> dict:
    """Train (or resume) every member × fold, then screen the families and select the ensembles. `configs` are
    family configs (trained at `seed`, the base seed) or `Member`s. Returns the registry; `trained` lists the
    (family, fold) pairs trained by this call. `device`: where models train
    (a torch.device or an auto|cpu|cuda[:N] spec, bst_rt.train.device); `progress`: a bst_rt.train.progress.PoolProgress;
    `ray`: None (sequential here) or "auto"/ADDRESS: every missing fold is a Ray task first (bst_rt.train.pool_ray;
    workers resolve the device spec) and the loop below then only reads the fold folders back."""
    from .ensemble import screen_families, write_ensembles

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    members = [m if isinstance(m, Member) else Member(m, m.name, seed) for m in configs]
    configs = [m.cfg for m in members]
    folds = official_folds(data.dev.labels)
    reg = _open_registry(out, data, seed, configs)
    reg.update(extra or {})
    reg["seeds"] = sorted({seed, *reg.get("seeds", []), *(m.seed for m in members)})
    for m in members:
        reg["families"][m.cfg.name].update(family=m.family, seed=m.seed, section=m.section)
    write_json(out / REGISTRY_JSON, reg)  # before any fold: an interrupted run's folder is already a run
    seed_of = {m.cfg.name: m.seed for m in members}
    todo = _missing_folds(out, configs, folds, data)
    if progress is not None:
        progress.start(todo)
    trained: list = []
    if ray is not None:
        from .pool_ray import train_folds_ray

        spec = device if isinstance(device, str) else str(device)
        trained, ran_on = train_folds_ray(out, todo, data, seed_of, spec, ray, progress=progress, log=log,
                                          **(ray_options or {}))
    else:
        from .device import device_name, resolve_device

        device = resolve_device(device) if isinstance(device, str) else device
        ran_on = {device_name(device)} if todo else set()
    reg["devices"] = sorted(set(reg.get("devices", [])) | ran_on)  # which devices trained this run's folds
    write_json(out / REGISTRY_JSON, reg)
    oofs: dict[str, dict] = {}
    for i, (cfg, member) in enumerate(zip(configs, members), 1):
        entry = reg["families"][cfg.name]
        missing = [n for n in cfg.external if n not in data.external]
        if (cfg.uses_cs and data.cs is None) or missing:
            entry.update(status="skipped", reason="no BSD35k-CS data (--cs)" if cfg.uses_cs and data.cs is None
                         else f"no external data for {', '.join(missing)} (--external NAME=PATH)")
            log(f"[{i}/{len(configs)}] {cfg.name}: skipped ({entry['reason']})")
            continue
        heldout: dict[int, np.ndarray] = {}
        for fold in folds:
            d = fold_dir(out, cfg.name, fold.k)
            if (d / FOLD_JSON).is_file():
                entry["folds"][str(fold.k)] = _with_validation(d, read_json(d / FOLD_JSON))
                continue
            entry["status"] = "training"
            if progress is not None:
                progress.fold_started(cfg.name, fold.k)
            scores, heldout[fold.k] = _train_fold_folder(out, cfg, fold, data, member.seed, device,
                                                         progress.epoch if progress is not None else None)
            entry["folds"][str(fold.k)] = scores
            write_json(out / REGISTRY_JSON, reg)
            trained.append((cfg.name, fold.k))
            if progress is not None:
                progress.fold_done(cfg.name, fold.k)
            log(fold_line(i, len(configs), cfg.name, fold.k, scores))
        oofs[cfg.name] = oof = write_oof(out, cfg.name, folds, data.dev, heldout)
        hfs = np.array([entry["folds"][str(k)]["hF"] for k in range(N_FOLDS)], dtype=float)
        val_hfs = [entry["folds"][str(k)]["val_hF"] for k in range(N_FOLDS)]
        entry.update(status="done", hF_mean=float(np.mean(hfs)), hF_std=float(np.std(hfs)),
                     val_hF_mean=float(np.mean(val_hfs)),
                     hF_oof=float(hierarchical_f1(oof["labels"], oof["probs"].argmax(1))))
        write_json(out / REGISTRY_JSON, reg)
    screen_families(reg)
    reg["ensembles"] = write_ensembles(Run(out, reg, {}), oofs=oofs)
    write_json(out / REGISTRY_JSON, reg)
    reg["trained"] = trained
    return reg


def _missing_folds(out: Path, configs: list[FamilyConfig], folds: list[Fold],
                   data: PoolData) -> list[tuple[FamilyConfig, Fold]]:
    """(family, fold) pairs this call must train, in training order (teachers first): trainable and no fold.json."""
    todo = []
    for cfg in configs:
        if (cfg.uses_cs and data.cs is None) or any(n not in data.external for n in cfg.external):
            continue
        todo += [(cfg, f) for f in folds if not fold_complete(out, cfg.name, f.k)]
    return todo


def run_pool(dev_root: Path, cs_root: Path | None, out: Path, families: list[str] | None = None, *, seed: int = 0,
             overrides: dict | None = None, external: dict[str, Path] | None = None, log: Log = print,
             device: torch.device | str = "cpu", progress=None, ray: str | None = None,
             ray_options: dict | None = None, seeds: list[int] | None = None,
             pool_file: str | Path | None = None) -> dict:
    """Load the data named on the command line and train the pool (what `bst-train train` calls). `seeds` trains every
    family at each seed (members `family@seed` beyond the first); `pool_file` names the members instead."""
    pool_doc = None
    if pool_file is not None:
        if families or seeds:
            raise BstError("--pool names the families and seeds itself: drop --families / --seeds")
        configs, seed, pool_doc = load_pool_file(pool_file, overrides)
    elif seeds:
        configs, seed = seed_members(families, seeds, overrides), seeds[0]
    else:
        configs = resolve_families(families, overrides)
    need_masked = any((c.cfg if isinstance(c, Member) else c).text_input == "masked" for c in configs)
    dev = load_arrays(dev_root, need_masked=need_masked)
    cs = load_arrays(cs_root, need_masked=need_masked) if cs_root else None
    ext = {name: load_external(name, Path(root), log=log) for name, root in (external or {}).items()}
    data = PoolData.build(dev, cs, ext)
    log(f"dev {len(dev)} clips; CS {len(data.cs) if data.cs is not None else 0} clips "
        f"({data.cs_dropped_overlap} dropped as dev duplicates); {len(configs)} families")
    extra = {"dev_root": str(Path(dev_root).resolve()), "cs_root": str(Path(cs_root).resolve()) if cs_root else None,
             "overrides": overrides or {}, "external_roots": {k: str(Path(v).resolve()) for k, v in (external or {}).items()},
             **({"pool_file": pool_doc} if pool_doc else {})}
    return train_pool(data, out, configs, seed=seed, log=log, extra=extra, device=device, progress=progress, ray=ray,
                      ray_options=ray_options)
