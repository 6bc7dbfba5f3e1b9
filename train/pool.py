"""The pool loop: trains every member on the five official folds (each fold one `fold_job.train_and_write_fold`,
here or as a Ray task, pool_ray.py), then screens the families and selects the ensembles, writing the run folder
through run.py. `train_pool` returns a `PoolResult`.

The loop keeps in memory what it has just written (fold scores, held-out probabilities, the OOF table, the registry)
instead of reading it back; it reads the run folder only for folds an earlier call or a Ray worker trained, and for
a student's teacher checkpoint (which may come from either).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.metrics import hierarchical_f1

from .data import PoolData, load_arrays
from .device import device_name, resolve_device
from .ensemble import screen_families, why_no_pool, write_ensembles
from .external import load_external
from .families import FamilyConfig
from .fold_job import fold_line, train_and_write_fold, written_scores
from .folds import N_FOLDS, Fold, official_folds
from .members import Member, load_pool_file, resolve_families, seed_members
from .pool_ray import train_folds_ray
from .progress import NullProgress
from .run import FOLD_JSON, REGISTRY_JSON, REGISTRY_SCHEMA, Run, fold_complete, fold_dir, read_json, write_json, write_oof

Log = Callable[[str], None]


@dataclass(frozen=True)
class SelectedPool:
    """One ensemble pool as selected on the out-of-fold probabilities (RUN/ensemble.json holds its full record)."""

    hF: float
    weights: dict[str, float]


@dataclass(frozen=True)
class PoolResult:
    """What `train_pool` leaves besides the run folder: the registry it wrote, the (family, fold) pairs this call
    trained, the devices that trained the run's folds, the selected pools, and why there is no pool (or None)."""

    out: Path
    registry: dict
    trained: list[tuple[str, int]]
    devices: list[str]
    ensembles: dict[str, SelectedPool]
    no_pool: str | None


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


def train_pool(data: PoolData, out: Path, configs: list[FamilyConfig] | list[Member], *, seed: int = 0,
               log: Log = print, extra: dict | None = None, device: torch.device | str = "cpu",
               progress: NullProgress | None = None, ray: str | None = None,
               ray_options: dict | None = None) -> PoolResult:
    """Train (or resume) every member × fold, then screen the families and select the ensembles. `configs` are
    family configs (trained at `seed`, the base seed) or `Member`s. `device`: where models train (a torch.device or
    an auto|cpu|cuda[:N] spec, bst_rt.train.device); `progress`: a bst_rt.train.progress.PoolProgress;
    `ray`: None (sequential here) or "auto"/ADDRESS: every missing fold is a Ray task first (bst_rt.train.pool_ray;
    workers resolve the device spec) and the loop below then only reads the fold folders back."""
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
    trained: list[tuple[str, int]] = []
    if ray is not None:
        spec = device if isinstance(device, str) else str(device)
        trained, ran_on = train_folds_ray(out, todo, data, seed_of, spec, ray, progress=progress, log=log,
                                          **(ray_options or {}))
    else:
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
                entry["folds"][str(fold.k)] = written_scores(d)
                continue
            entry["status"] = "training"
            if progress is not None:
                progress.fold_started(cfg.name, fold.k)
            written = train_and_write_fold(out, cfg, fold, data, member.seed, device,
                                           progress.epoch if progress is not None else None)
            scores, heldout[fold.k] = written.scores, written.heldout
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
    run = Run(out, reg, {})
    reg["ensembles"] = write_ensembles(run, oofs=oofs)
    write_json(out / REGISTRY_JSON, reg)
    pools = {name: SelectedPool(p["hF"], p["weights"]) for name, p in reg["ensembles"].items()}
    return PoolResult(out, reg, trained, reg["devices"], pools, None if pools else why_no_pool(run))


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
             device: torch.device | str = "cpu", progress: NullProgress | None = None, ray: str | None = None,
             ray_options: dict | None = None, seeds: list[int] | None = None,
             pool_file: str | Path | None = None) -> PoolResult:
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
