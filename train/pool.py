"""The pool: trains every family on the five official folds, writes the run folder, and reads it back.

Run folder (docs/ARCHITECTURE.md): `registry.json` is the index; each fold writes checkpoint.pt, args.json,
config.snapshot.json, heldout.npz and calibration.json, then `fold.json` last, which marks the fold complete — an
interrupted pool resumes at the first fold without one. `load_run`, `load_fold_models` and `family_probs` are the API
the exporter, ranker and systems use; `family_probs` is THE deployment-time definition of a family's distribution.
"""
from __future__ import annotations

import copy
import hashlib
import json
import platform
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from bst_rt.runtime.atomic import atomic_open, atomic_write_text
from bst_rt.runtime.datasets import read_dev_dataset
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.metrics import hierarchical_f1
from bst_rt.runtime.taxonomy import NUM_CLASSES

from . import calibrate, teacher
from .families import FamilyConfig, TermBatch, augment, build_model, drop_rows, eq1_loss, load_family
from .folds import N_FOLDS, Fold, official_folds

REGISTRY_SCHEMA = 1
Log = Callable[[str], None]
EpochHook = Callable[[int, int, float], None]


# ---------------------------------------------------------------- data


@dataclass
class Arrays:
    """One dataset as the loop needs it: ids, labels (-1 = none), confidences and the three embeddings."""

    ids: np.ndarray
    labels: np.ndarray
    confidences: np.ndarray
    audio: np.ndarray
    text: np.ndarray
    masked: np.ndarray
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> "Arrays":
        return Arrays(self.ids[rows], self.labels[rows], self.confidences[rows], self.audio[rows], self.text[rows],
                      self.masked[rows], self.fingerprint)

    def inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.audio, self.text, self.masked


def arrays_fingerprint(meta_fingerprint: str, *arrays: np.ndarray) -> str:
    """Metadata hash + embedding bytes: a run resumed on other features must not mix with its old folds."""
    digest = hashlib.sha256(meta_fingerprint.encode())
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def load_arrays(root: Path, *, need_masked: bool = True) -> Arrays:
    """Read a BSD10k / BSD35k-CS folder and its `features/` embeddings (masked text zero-filled if not needed)."""
    ds = read_dev_dataset(Path(root))
    audio = ds.load_embeddings("audio")
    text = ds.load_embeddings("text")
    masked = ds.load_embeddings("text_masked", missing="error" if need_masked else "zero")
    fp = arrays_fingerprint(ds.fingerprint(), audio, text, masked)
    return Arrays(np.array(ds.ids), ds.label_indices, ds.confidences, audio, text, masked, fp)


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


def _tensors(x: Arrays, rows: np.ndarray, device: torch.device | None = None) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a[rows])).to(device or "cpu") for a in x.inputs()]


def predict_logits(model: torch.nn.Module, x: Arrays, batch: int = 4096) -> np.ndarray:
    """Logits [N,23] as CPU numpy, on whichever device the model's parameters are."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            rows = np.arange(start, min(start + batch, len(x)))
            out.append(model(*_tensors(x, rows, device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


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
            parts = [_tensors(t.x, rows) for t, rows in zip(terms, picks)]
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


@dataclass
class PoolData:
    """Dev set, CS set (dev ids already removed) and mapped external sets, loaded once per pool."""

    dev: Arrays
    cs: Arrays | None = None
    external: dict[str, Arrays] = field(default_factory=dict)
    cs_dropped_overlap: int = 0

    @classmethod
    def build(cls, dev: Arrays, cs: Arrays | None = None, external: dict[str, Arrays] | None = None) -> "PoolData":
        dropped = 0
        if cs is not None:
            keep = teacher.drop_dev_overlap(cs.ids, dev.ids)
            dropped = len(cs) - len(keep)
            cs = cs.take(keep)
        return cls(dev, cs, dict(external or {}), dropped)

    def fingerprints(self) -> dict:
        return {"dev": self.dev.fingerprint, "cs": self.cs.fingerprint if self.cs is not None else None,
                **{f"external:{k}": v.fingerprint for k, v in sorted(self.external.items())}}


def concat_arrays(a: Arrays, b: Arrays) -> Arrays:
    cat = np.concatenate
    return Arrays(cat([a.ids, b.ids]), cat([a.labels, b.labels]), cat([a.confidences, b.confidences]),
                  cat([a.audio, b.audio]), cat([a.text, b.text]), cat([a.masked, b.masked]), a.fingerprint)


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


# ---------------------------------------------------------------- run folder


def _json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except json.JSONDecodeError as exc:
        raise BstError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def family_seed(seed: int, family: str, k: int) -> int:
    """Distinct, reproducible seed per (pool seed, family, fold)."""
    return seed * 100_003 + int(hashlib.sha256(family.encode()).hexdigest()[:6], 16) % 10_000 * 10 + k


@dataclass
class Run:
    """A run folder opened for reading: registry, ensemble pools and paths."""

    path: Path
    registry: dict
    ensembles: dict

    def family_dir(self, family: str) -> Path:
        return self.path / "families" / family

    def fold_dir(self, family: str, k: int) -> Path:
        return self.family_dir(family) / f"fold{k}"

    @property
    def families(self) -> list[str]:
        return [f for f, e in self.registry["families"].items() if e["status"] == "done"]

    def selectable(self) -> list[str]:
        """Done families a pool may hold: not excluded as abnormal, not trained on CS labels taken as clean."""
        from .ensemble import pool_candidates

        return pool_candidates(self)

    def oof(self, family: str) -> dict[str, np.ndarray]:
        with np.load(self.family_dir(family) / "oof.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def config(self, family: str) -> FamilyConfig:
        return FamilyConfig(**self.registry["families"][family]["config"])


def load_run(run_dir: Path | str) -> Run:
    path = Path(run_dir)
    reg_path = path / "registry.json"
    if not reg_path.is_file():
        raise BstError(f"{path}: no registry.json (not a `bst-train train` run folder)")
    registry = _read_json(reg_path)
    if registry.get("schema") != REGISTRY_SCHEMA:
        raise BstError(f"{reg_path}: registry schema {registry.get('schema')!r}, expected {REGISTRY_SCHEMA}")
    ens_path = path / "ensemble.json"
    ensembles = _read_json(ens_path)["pools"] if ens_path.is_file() else {}
    return Run(path, registry, ensembles)


def load_fold_model(run: Run | Path | str, family: str, k: int,
                    device: torch.device | str = "cpu") -> tuple[torch.nn.Module, float]:
    """One fold model in eval mode on `device` with its fitted temperature (checkpoints hold CPU tensors and load
    on any device)."""
    run = run if isinstance(run, Run) else load_run(run)
    d = run.fold_dir(family, k)
    if not (d / "fold.json").is_file():
        raise BstError(f"{d}: fold not complete (run `bst-train train` again to resume)")
    ckpt = torch.load(d / "checkpoint.pt", map_location=device, weights_only=True)
    model = build_model(FamilyConfig(**_read_json(d / "config.snapshot.json"))).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, float(_read_json(d / "calibration.json")["temperature"])


def load_fold_models(run: Run | Path | str, family: str) -> list[tuple[torch.nn.Module, float]]:
    """The family's five fold models in eval mode, each with its fitted temperature."""
    run = run if isinstance(run, Run) else load_run(run)
    return [load_fold_model(run, family, k) for k in range(N_FOLDS)]


def family_probs(models: Iterable[tuple[torch.nn.Module, float]], audio: np.ndarray, text: np.ndarray,
                 masked: np.ndarray) -> np.ndarray:
    """Deployment-time family distribution: mean over fold models of softmax(logits / T_fold), [N,23]."""
    x = Arrays(np.arange(len(audio)), np.zeros(len(audio), np.int64), np.zeros(len(audio)),
               np.asarray(audio, np.float32), np.asarray(text, np.float32), np.asarray(masked, np.float32))
    probs = [calibrate.calibrated_probs(predict_logits(m, x), t) for m, t in models]
    return np.mean(probs, axis=0).astype(np.float32)


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
    doc = _read_json(path)
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


def _write_fold(d: Path, cfg: FamilyConfig, fold: Fold, data: PoolData, out: FoldOutcome, scores: dict,
                args: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    with atomic_open(d / "checkpoint.pt", "wb") as fh:
        torch.save({"state_dict": out.state_dict, "family": cfg.name, "fold": fold.k, "seed": args["seed"]}, fh)
    _json(d / "args.json", args)
    _json(d / "config.snapshot.json", cfg.to_dict())
    test = data.dev.take(fold.test)
    probs = calibrate.calibrated_probs(out.test_logits, 1.0)
    cal = calibrate.calibrated_probs(out.test_logits, scores["temperature"])
    with atomic_open(d / "heldout.npz", "wb") as fh:
        np.savez(fh, ids=test.ids.astype(str), labels=test.labels, rows=fold.test, logits=out.test_logits,
                 probs=probs, calibrated_probs=cal, val_logits=out.val_logits, val_labels=data.dev.labels[fold.val])
    _json(d / "calibration.json", {"temperature": scores["temperature"], "fitted_on": "validation",
                                   "n_val": int(len(fold.val))})
    _json(d / "fold.json", scores)  # written last: the fold is complete


def _with_validation(d: Path, scores: dict) -> dict:
    """A fold written before validation figures were recorded: derive them from its stored validation logits."""
    if "val_hF" in scores:
        return scores
    with np.load(d / "heldout.npz", allow_pickle=False) as z:
        return {**scores, **validation_scores(z["val_logits"], z["val_labels"], bool(scores.get("finite", True)))}


def _write_oof(run: Path, family: str, folds: list[Fold], dev: Arrays) -> None:
    probs = np.zeros((len(dev), NUM_CLASSES), np.float32)
    fold_of = np.full(len(dev), -1, np.int64)
    for f in folds:
        with np.load(run / "families" / family / f"fold{f.k}" / "heldout.npz", allow_pickle=False) as z:
            probs[z["rows"]] = z["calibrated_probs"]
        fold_of[f.test] = f.k
    with atomic_open(run / "families" / family / "oof.npz", "wb") as fh:
        np.savez(fh, ids=dev.ids.astype(str), labels=dev.labels, probs=probs, fold=fold_of)


def _teacher_probs(run: Path, cfg: FamilyConfig, fold: Fold, data: PoolData,
                   device: torch.device | None = None) -> np.ndarray:
    d = run / "families" / cfg.cs.teacher / f"fold{fold.k}"

    def compute() -> np.ndarray:
        return family_probs([load_fold_model(run, cfg.cs.teacher, fold.k, device or "cpu")], *data.cs.inputs())

    key = f"{data.cs.fingerprint}:{hashlib.sha256((d / 'checkpoint.pt').read_bytes()).hexdigest()}"
    return teacher.cached_cs_probs(d / "cs_teacher.npz", key, compute)


def _open_registry(out: Path, data: PoolData, seed: int, configs: list[FamilyConfig]) -> dict:
    path = out / "registry.json"
    fps = data.fingerprints()
    if path.is_file():
        reg = _read_json(path)
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
    _write_fold(out / "families" / cfg.name / f"fold{fold.k}", cfg, fold, data, result, scores, args)
    return scores


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
    _json(out / "registry.json", reg)  # before any fold: a student's teacher is read through load_run
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
    _json(out / "registry.json", reg)
    for i, (cfg, member) in enumerate(zip(configs, members), 1):
        entry = reg["families"][cfg.name]
        missing = [n for n in cfg.external if n not in data.external]
        if (cfg.uses_cs and data.cs is None) or missing:
            entry.update(status="skipped", reason="no BSD35k-CS data (--cs)" if cfg.uses_cs and data.cs is None
                         else f"no external data for {', '.join(missing)} (--external NAME=PATH)")
            log(f"[{i}/{len(configs)}] {cfg.name}: skipped ({entry['reason']})")
            continue
        for fold in folds:
            d = out / "families" / cfg.name / f"fold{fold.k}"
            if (d / "fold.json").is_file():
                entry["folds"][str(fold.k)] = _with_validation(d, _read_json(d / "fold.json"))
                continue
            entry["status"] = "training"
            if progress is not None:
                progress.fold_started(cfg.name, fold.k)
            scores = train_and_write_fold(out, cfg, fold, data, member.seed, device,
                                          progress.epoch if progress is not None else None)
            entry["folds"][str(fold.k)] = scores
            _json(out / "registry.json", reg)
            trained.append((cfg.name, fold.k))
            if progress is not None:
                progress.fold_done(cfg.name, fold.k)
            log(fold_line(i, len(configs), cfg.name, fold.k, scores))
        _write_oof(out, cfg.name, folds, data.dev)
        hfs = np.array([entry["folds"][str(k)]["hF"] for k in range(N_FOLDS)], dtype=float)
        oof = np.load(out / "families" / cfg.name / "oof.npz")
        val_hfs = [entry["folds"][str(k)]["val_hF"] for k in range(N_FOLDS)]
        entry.update(status="done", hF_mean=float(np.mean(hfs)), hF_std=float(np.std(hfs)),
                     val_hF_mean=float(np.mean(val_hfs)),
                     hF_oof=float(hierarchical_f1(oof["labels"], oof["probs"].argmax(1))))
        _json(out / "registry.json", reg)
    screen_families(reg)
    reg["ensembles"] = write_ensembles(Run(out, reg, {}))
    _json(out / "registry.json", reg)
    reg["trained"] = trained
    return reg


def _missing_folds(out: Path, configs: list[FamilyConfig], folds: list[Fold],
                   data: PoolData) -> list[tuple[FamilyConfig, Fold]]:
    """(family, fold) pairs this call must train, in training order (teachers first): trainable and no fold.json."""
    todo = []
    for cfg in configs:
        if (cfg.uses_cs and data.cs is None) or any(n not in data.external for n in cfg.external):
            continue
        todo += [(cfg, f) for f in folds if not (out / "families" / cfg.name / f"fold{f.k}" / "fold.json").is_file()]
    return todo


def run_pool(dev_root: Path, cs_root: Path | None, out: Path, families: list[str] | None = None, *, seed: int = 0,
             overrides: dict | None = None, external: dict[str, Path] | None = None, log: Log = print,
             device: torch.device | str = "cpu", progress=None, ray: str | None = None,
             ray_options: dict | None = None, seeds: list[int] | None = None,
             pool_file: str | Path | None = None) -> dict:
    """Load the data named on the command line and train the pool (what `bst-train train` calls). `seeds` trains every
    family at each seed (members `family@seed` beyond the first); `pool_file` names the members instead."""
    from .external import load_external

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
