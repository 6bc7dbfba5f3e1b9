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
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from bst.runtime.atomic import atomic_open, atomic_write_text
from bst.runtime.datasets import read_dev_dataset
from bst.runtime.errors import BstError
from bst.runtime.metrics import hierarchical_f1
from bst.runtime.taxonomy import NUM_CLASSES

from . import calibrate, teacher
from .families import (FamilyConfig, augment, build_model, drop_rows, hard_loss, hier_loss, load_family,
                       soft_loss)
from .folds import N_FOLDS, Fold, official_folds

REGISTRY_SCHEMA = 1
Log = Callable[[str], None]


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


def _tensors(x: Arrays, rows: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a[rows])) for a in x.inputs()]


def predict_logits(model: torch.nn.Module, x: Arrays, batch: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            rows = np.arange(start, min(start + batch, len(x)))
            out.append(model(*_tensors(x, rows)).numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def train_fold(cfg: FamilyConfig, terms: list[Term], val: Arrays, test: Arrays, seed: int) -> FoldOutcome:
    """Train one fold model: the first term drives the epoch, each other term adds a same-size sampled batch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    main = terms[0]
    counts = np.bincount(main.targets, minlength=NUM_CLASSES) + 1.0
    log_prior = torch.log(torch.from_numpy((counts / counts.sum()).astype(np.float32)))
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
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
            logits = model(audio, text, masked)
            loss, offset = torch.zeros(()), 0
            for t, rows in zip(terms, picks):
                chunk = logits[offset:offset + len(rows)]
                offset += len(rows)
                w = torch.from_numpy(t.weights[rows])
                if t.soft:
                    loss = loss + t.lam * soft_loss(chunk, torch.from_numpy(t.targets[rows]))
                else:
                    y = torch.from_numpy(t.targets[rows])
                    loss = loss + t.lam * hard_loss(chunk, y, w, cfg, log_prior if t is main else None)
                    if cfg.hier_weight and t is main:
                        loss = loss + cfg.hier_weight * hier_loss(chunk, y, w)
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
        if acc > best[0]:
            best, since = (acc, epoch, copy.deepcopy(model.state_dict())), 0
        else:
            since += 1
            if since >= cfg.patience:
                break
    model.load_state_dict(best[2])
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
        """Done families not excluded as abnormal."""
        return [f for f in self.families if not self.registry["families"][f].get("excluded")]

    def oof(self, family: str) -> dict[str, np.ndarray]:
        with np.load(self.family_dir(family) / "oof.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def config(self, family: str) -> FamilyConfig:
        return FamilyConfig(**self.registry["families"][family]["config"])


def load_run(run_dir: Path | str) -> Run:
    path = Path(run_dir)
    reg_path = path / "registry.json"
    if not reg_path.is_file():
        raise BstError(f"{path}: no registry.json (not a `bst train` run folder)")
    registry = _read_json(reg_path)
    if registry.get("schema") != REGISTRY_SCHEMA:
        raise BstError(f"{reg_path}: registry schema {registry.get('schema')!r}, expected {REGISTRY_SCHEMA}")
    ens_path = path / "ensemble.json"
    ensembles = _read_json(ens_path)["pools"] if ens_path.is_file() else {}
    return Run(path, registry, ensembles)


def load_fold_model(run: Run | Path | str, family: str, k: int) -> tuple[torch.nn.Module, float]:
    """One fold model in eval mode with its fitted temperature."""
    run = run if isinstance(run, Run) else load_run(run)
    d = run.fold_dir(family, k)
    if not (d / "fold.json").is_file():
        raise BstError(f"{d}: fold not complete (run `bst train` again to resume)")
    ckpt = torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = build_model(FamilyConfig(**_read_json(d / "config.snapshot.json")))
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


def _fold_scores(out: FoldOutcome, labels_val: np.ndarray, labels_test: np.ndarray) -> dict:
    temperature = calibrate.fit_temperature(out.val_logits, labels_val)
    pred = out.test_logits.argmax(1)
    share = np.bincount(pred, minlength=NUM_CLASSES).max() / max(len(pred), 1)
    finite = out.finite and bool(np.isfinite(out.test_logits).all())
    return {
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


def _write_oof(run: Path, family: str, folds: list[Fold], dev: Arrays) -> None:
    probs = np.zeros((len(dev), NUM_CLASSES), np.float32)
    fold_of = np.full(len(dev), -1, np.int64)
    for f in folds:
        with np.load(run / "families" / family / f"fold{f.k}" / "heldout.npz", allow_pickle=False) as z:
            probs[z["rows"]] = z["calibrated_probs"]
        fold_of[f.test] = f.k
    with atomic_open(run / "families" / family / "oof.npz", "wb") as fh:
        np.savez(fh, ids=dev.ids.astype(str), labels=dev.labels, probs=probs, fold=fold_of)


def _teacher_probs(run: Path, cfg: FamilyConfig, fold: Fold, data: PoolData) -> np.ndarray:
    d = run / "families" / cfg.cs.teacher / f"fold{fold.k}"

    def compute() -> np.ndarray:
        return family_probs([load_fold_model(run, cfg.cs.teacher, fold.k)], *data.cs.inputs())

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


def train_pool(data: PoolData, out: Path, configs: list[FamilyConfig], *, seed: int = 0, log: Log = print,
               extra: dict | None = None) -> dict:
    """Train (or resume) every family × fold, then screen the families and select the ensembles. Returns the
    registry; `trained` lists the (family, fold) pairs trained by this call."""
    from .ensemble import screen_families, write_ensembles

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folds = official_folds(data.dev.labels)
    reg = _open_registry(out, data, seed, configs)
    reg.update(extra or {})
    _json(out / "registry.json", reg)
    trained = []
    for i, cfg in enumerate(configs, 1):
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
                entry["folds"][str(fold.k)] = _read_json(d / "fold.json")
                continue
            entry["status"] = "training"
            tprobs = _teacher_probs(out, cfg, fold, data) if cfg.cs.mode == "teacher" else None
            terms = fold_terms(cfg, fold, data, tprobs)
            fseed = family_seed(seed, cfg.name, fold.k)
            result = train_fold(cfg, terms, data.dev.take(fold.val), data.dev.take(fold.test), fseed)
            scores = _fold_scores(result, data.dev.labels[fold.val], data.dev.labels[fold.test])
            args = {"family": cfg.name, "fold": fold.k, "seed": fseed, "pool_seed": seed,
                    "n_train": int(len(fold.train)), "n_val": int(len(fold.val)), "n_test": int(len(fold.test)),
                    "terms": result.term_sizes, "teacher": cfg.cs.teacher if cfg.cs.mode == "teacher" else None,
                    "data_fingerprints": data.fingerprints(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads()}
            _write_fold(d, cfg, fold, data, result, scores, args)
            entry["folds"][str(fold.k)] = scores
            _json(out / "registry.json", reg)
            trained.append((cfg.name, fold.k))
            log(f"[{i}/{len(configs)}] {cfg.name} fold {fold.k + 1}/{N_FOLDS}: hF {scores['hF']:.4f} "
                f"(epochs {scores['epochs_run']}, T {scores['temperature']:.2f})")
        _write_oof(out, cfg.name, folds, data.dev)
        hfs = np.array([entry["folds"][str(k)]["hF"] for k in range(N_FOLDS)], dtype=float)
        oof = np.load(out / "families" / cfg.name / "oof.npz")
        entry.update(status="done", hF_mean=float(np.mean(hfs)), hF_std=float(np.std(hfs)),
                     hF_oof=float(hierarchical_f1(oof["labels"], oof["probs"].argmax(1))))
        _json(out / "registry.json", reg)
    screen_families(reg)
    reg["ensembles"] = write_ensembles(Run(out, reg, {}))
    _json(out / "registry.json", reg)
    reg["trained"] = trained
    return reg


def run_pool(dev_root: Path, cs_root: Path | None, out: Path, families: list[str] | None = None, *, seed: int = 0,
             overrides: dict | None = None, external: dict[str, Path] | None = None, log: Log = print) -> dict:
    """Load the data named on the command line and train the pool (what `bst train` calls)."""
    from .external import load_external

    configs = resolve_families(families, overrides)
    need_masked = any(c.text_input == "masked" for c in configs)
    dev = load_arrays(dev_root, need_masked=need_masked)
    cs = load_arrays(cs_root, need_masked=need_masked) if cs_root else None
    ext = {name: load_external(name, Path(root), log=log) for name, root in (external or {}).items()}
    data = PoolData.build(dev, cs, ext)
    log(f"dev {len(dev)} clips; CS {len(data.cs) if data.cs is not None else 0} clips "
        f"({data.cs_dropped_overlap} dropped as dev duplicates); {len(configs)} families")
    extra = {"dev_root": str(Path(dev_root).resolve()), "cs_root": str(Path(cs_root).resolve()) if cs_root else None,
             "overrides": overrides or {}, "external_roots": {k: str(Path(v).resolve()) for k, v in (external or {}).items()}}
    return train_pool(data, out, configs, seed=seed, log=log, extra=extra)
