"""The pool loop: trains every family on the five official folds (one-fold training included) and writes the run
folder through run.py, the contract its readers use (`load_run`, `load_fold_models`, `family_probs` live there).

Data arrays are data.py's. The loop keeps in memory what it has just written (fold scores, held-out probabilities,
the OOF table, the registry) instead of reading it back; it reads the run folder only for folds an earlier call or
a Ray worker trained.
"""
from __future__ import annotations

import copy
import hashlib
import platform
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.metrics import hierarchical_f1
from bst_rt.runtime.taxonomy import NUM_CLASSES

from . import calibrate, teacher
from .data import Arrays, PoolData, arrays_fingerprint, concat_arrays, load_arrays
from .external import load_external
from .families import FamilyConfig, TermBatch, augment, build_model, drop_rows, eq1_loss, load_family
from .folds import N_FOLDS, Fold, official_folds
from .run import (CHECKPOINT, FOLD_JSON, HELDOUT_NPZ, REGISTRY_JSON, REGISTRY_SCHEMA, TEACHER_CACHE, Run,
                  family_probs, fold_complete, fold_dir, load_fold_dir, load_fold_model, load_fold_models, load_run,
                  predict_logits, read_json, row_tensors, write_fold, write_json, write_oof)

#: the data and run-folder names tests, bench and older callers import from here
__all__ = ["Arrays", "PoolData", "arrays_fingerprint", "load_arrays", "Run", "family_probs", "load_fold_model",
           "load_fold_models", "load_run", "QUICK_OVERRIDES", "run_pool", "train_pool", "train_and_write_fold",
           "fold_terms", "train_fold", "resolve_families", "validation_scores", "load_pool_file"]

Log = Callable[[str], None]
EpochHook = Callable[[int, int, float], None]


# ---------------------------------------------------------------- one fold


@dataclass
class Term:
    """One term of eq. (1): rows, their targets (int labels or soft [n,23]), row weights and the term's lambda."""

    name: str
    x: Arrays
    targets: np.ndarray
    weights: np.ndarray
    lam: float

    @property
    def soft(self) -> bool:
        return self.targets.ndim == 2


@dataclass
class FoldOutcome:
    state_dict: dict
    val_logits: np.ndarray
    test_logits: np.ndarray
    epochs_run: int
    best_epoch: int
    best_val_acc: float
    finite: bool
    last_loss: float
    term_sizes: dict = field(default_factory=dict)


def confidence_weights(conf: np.ndarray, power: float) -> np.ndarray:
    """(confidence / 5) ** power; rows without a confidence get weight 1."""
    if not power:
        return np.ones(len(conf), dtype=np.float32)
    w = np.where(np.isfinite(conf), np.clip(conf, 1, 5) / 5.0, 1.0) ** power
    return w.astype(np.float32)


def _cpu_state(model: torch.nn.Module) -> dict:
    """A CPU copy of the weights: checkpoints load on any device and the best epoch survives later updates."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_fold(cfg: FamilyConfig, terms: list[Term], val: Arrays, test: Arrays, seed: int,
               device: torch.device | None = None, on_epoch: EpochHook | None = None) -> FoldOutcome:
    """Train one fold model: the first term drives the epoch, each other term adds a same-size sampled batch.
    Initialisation and augmentation noise are drawn on the CPU whatever `device` is (same streams on every device);
    `on_epoch(epoch, max_epochs, val_accuracy)` reports progress."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    main = terms[0]
    counts = np.bincount(main.targets, minlength=NUM_CLASSES) + 1.0
    log_prior = torch.log(torch.from_numpy((counts / counts.sum()).astype(np.float32))).to(device)
    best = (-1.0, 0, _cpu_state(model))
    since, finite, last_loss, epoch = 0, True, float("nan"), 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(main.x))
        for start in range(0, len(order), cfg.batch_size):
            picks = [order[start:start + cfg.batch_size]]
            if len(picks[0]) < 2:  # BatchNorm needs two rows
                continue
            picks += [rng.integers(0, len(t.x), cfg.batch_size) for t in terms[1:]]
            parts = [row_tensors(t.x, rows) for t, rows in zip(terms, picks)]
            audio, text, masked = (torch.cat([p[i] for p in parts]) for i in range(3))
            audio = augment(audio, cfg, gen)
            text = drop_rows(augment(text, cfg, gen), cfg.text_dropout, gen)
            masked = drop_rows(augment(masked, cfg, gen), cfg.text_dropout, gen)
            logits = model(audio.to(device), text.to(device), masked.to(device))
            batches, offset = [], 0
            for t, rows in zip(terms, picks):
                batches.append(TermBatch(t.name, logits[offset:offset + len(rows)],
                                         torch.from_numpy(t.targets[rows]).to(device),
                                         torch.from_numpy(t.weights[rows]).to(device), t.lam, t is main))
                offset += len(rows)
            loss, _ = eq1_loss(batches, cfg, log_prior)
            last_loss = float(loss.detach())
            if not np.isfinite(last_loss):
                finite = False
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        if not finite:
            break
        sched.step()
        acc = float((predict_logits(model, val).argmax(1) == val.labels).mean()) if len(val) else 0.0
        if on_epoch is not None:
            on_epoch(epoch, cfg.epochs, acc)
        if acc > best[0]:
            best, since = (acc, epoch, _cpu_state(model)), 0
        else:
            since += 1
            if since >= cfg.patience:
                break
    model.load_state_dict(best[2])  # copies into the model's device
    return FoldOutcome(best[2], predict_logits(model, val), predict_logits(model, test), epoch, best[1], best[0],
                       finite, last_loss, {t.name: len(t.x) for t in terms})


# ---------------------------------------------------------------- what one fold trains on


def fold_terms(cfg: FamilyConfig, fold: Fold, data: PoolData, teacher_probs: np.ndarray | None = None) -> list[Term]:
    """The training rows of one fold: dev train split (+ CS and external per the family). Only `fold.train` dev rows
    are read; validation and test rows never enter a term (tests/test_train_leakage.py)."""
    clean = data.dev.take(fold.train)
    w = confidence_weights(clean.confidences, cfg.confidence_power)
    terms = [Term("clean", clean, clean.labels, w, 1.0)]
    if cfg.uses_cs and (data.cs is None or len(data.cs) == 0):
        raise BstError(f"family {cfg.name!r} needs the BSD35k-CS set: pass --cs")
    if cfg.cs.mode == "naive":
        merged = concat_arrays(clean, data.cs)
        weights = np.concatenate([w, np.full(len(data.cs), cfg.cs.weight, np.float32)])
        terms[0] = Term("clean+cs-naive", merged, merged.labels, weights, 1.0)
    elif cfg.cs.mode == "teacher":
        if teacher_probs is None or len(teacher_probs) != len(data.cs):
            raise BstError(f"family {cfg.name!r}: teacher probabilities for fold {fold.k} are missing")
        tt = teacher.teacher_targets(teacher_probs, cfg.cs.hard_threshold, data.cs.labels, cfg.cs.label_trust)
        ones = np.ones(len(data.cs), np.float32)
        terms.append(Term("cs-soft", data.cs, tt.soft, ones, cfg.cs.lambda_soft))
        if len(tt.hard_rows):
            terms.append(Term("cs-hard", data.cs.take(tt.hard_rows), tt.hard_labels, ones[tt.hard_rows],
                              cfg.cs.lambda_hard))
    for name in cfg.external:
        ext = data.external.get(name)
        if ext is None or len(ext) == 0:
            raise BstError(f"family {cfg.name!r} needs external data {name!r}: pass --external {name}=PATH")
        terms.append(Term(f"external-{name}", ext, ext.labels, np.ones(len(ext), np.float32), cfg.external_weight))
    return terms


def family_seed(seed: int, family: str, k: int) -> int:
    """Distinct, reproducible seed per (pool seed, family, fold)."""
    return seed * 100_003 + int(hashlib.sha256(family.encode()).hexdigest()[:6], 16) % 10_000 * 10 + k


# ---------------------------------------------------------------- the pool


ALWAYS = ("audio-only", "text-only")  # the runtime's fallbacks: every pool has them

#: reduced pool for tests and demos on the small synthetic corpus: shallow, narrow, few epochs. Batch 16 keeps enough
#: optimiser steps for BatchNorm running statistics to settle on ~180 training rows (batch 64 collapses there).
QUICK_OVERRIDES: dict = {"epochs": 12, "patience": 5, "width_div": 4, "branch_blocks": 0, "head_blocks": 0,
                         "dropout": 0.0, "zero_dims_max": 50, "lr": 0.003, "batch_size": 16}


def resolve_families(names: list[str] | None, overrides: dict | None = None) -> list[FamilyConfig]:
    """Configs in training order: teachers first, then the requested families, plus the two fallbacks."""
    from .families import list_families

    names = list(names or list_families())
    names += [n for n in ALWAYS if n not in names]
    configs = {n: load_family(n).with_overrides(overrides) for n in names}
    teachers = []
    for cfg in list(configs.values()):
        if cfg.cs.mode == "teacher" and cfg.cs.teacher not in configs:
            configs[cfg.cs.teacher] = load_family(cfg.cs.teacher).with_overrides(overrides)
        if cfg.cs.mode == "teacher" and cfg.cs.teacher not in teachers:
            teachers.append(cfg.cs.teacher)
    for t in teachers:
        if configs[t].cs.mode != "none":
            raise BstError(f"teacher family {t!r} may not itself train on BSD35k-CS")
    return [configs[t] for t in teachers] + [c for n, c in configs.items() if n not in teachers]


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


MEMBER_SEP = "@"


@dataclass
class Member:
    """One trained pool member: a family config at one seed. Its name is the family's at the run's base seed and
    `family@seed` at any other (`v2mix@1`), so a one-seed run keeps plain names and the runtime's fallbacks
    (`audio-only`, `text-only`) are always there by name. `section` is the seed report's composition group (§2.4)
    the pool file put it in, for `bst-train report`."""

    cfg: FamilyConfig
    family: str
    seed: int
    section: str | None = None


def member_name(family: str, seed: int, base_seed: int) -> str:
    return family if seed == base_seed else f"{family}{MEMBER_SEP}{seed}"


def expand_members(entries: list[tuple[str, int, str | None]], base_seed: int,
                   overrides: dict | None = None) -> list[Member]:
    """(family, seed, section) triples → members in training order (teachers first), with the two fallbacks at the
    base seed. A member's BSD35k-CS teacher is the teacher family at the member's own seed when the run trains that
    seed of it, else at the base seed (added if missing)."""
    entries = list(dict.fromkeys(entries))
    for name in ALWAYS:
        if not any(f == name and s == base_seed for f, s, _ in entries):
            entries.append((name, base_seed, None))
    configs: dict[str, FamilyConfig] = {}

    def config(family: str) -> FamilyConfig:
        if family not in configs:
            configs[family] = load_family(family).with_overrides(overrides)
        return configs[family]

    wanted = {(f, s) for f, s, _ in entries}
    for family, seed, _ in list(entries):
        t = config(family).cs
        if t.mode == "teacher" and (t.teacher, seed) not in wanted and (t.teacher, base_seed) not in wanted:
            entries.append((t.teacher, base_seed, None))
            wanted.add((t.teacher, base_seed))
    members: dict[str, Member] = {}
    teachers: list[str] = []
    for family, seed, section in entries:
        cfg = copy.deepcopy(config(family))
        cfg.name = member_name(family, seed, base_seed)
        if cfg.cs.mode == "teacher":
            t_seed = seed if (cfg.cs.teacher, seed) in wanted else base_seed
            cfg.cs.teacher = member_name(cfg.cs.teacher, t_seed, base_seed)
            teachers.append(cfg.cs.teacher)
        members[cfg.name] = Member(cfg, family, seed, section)
    teachers = list(dict.fromkeys(teachers))
    for t in teachers:
        if members[t].cfg.cs.mode != "none":
            raise BstError(f"teacher family {t!r} may not itself train on BSD35k-CS")
    return [members[t] for t in teachers] + [m for n, m in members.items() if n not in teachers]


def seed_members(names: list[str] | None, seeds: list[int], overrides: dict | None = None) -> list[Member]:
    """`bst-train train --seeds 0,1,2`: every requested family (default: every config) at every seed; base seed first."""
    from .families import list_families

    if not seeds or len(set(seeds)) != len(seeds):
        raise BstError(f"--seeds needs distinct seeds, got {seeds}")
    names = list(names or list_families())
    names += [n for n in ALWAYS if n not in names]
    return expand_members([(f, s, None) for s in seeds for f in names], seeds[0], overrides)


POOLS_DIR = "pools"


def load_pool_file(name_or_path: str | Path, overrides: dict | None = None) -> tuple[list[Member], int, dict]:
    """A pool file (`train/pools/<name>.json` or a path): {"base_seed", "sections": {section: {family: [seeds]}}}.
    Returns the members, the base seed and the file's content (recorded in the registry)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = Path(str(resources.files("bst_rt.train") / POOLS_DIR)) / f"{name_or_path}.json"
    if not path.is_file():
        raise BstError(f"no pool file {path}")
    doc = read_json(path)
    base = int(doc.get("base_seed", 0))
    entries = [(family, int(s), section) for section, fams in doc["sections"].items()
               for family, seeds in fams.items() for s in seeds]
    return expand_members(entries, base, overrides), base, {"file": path.name, **doc}


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
