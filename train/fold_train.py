"""One fold's training: the terms of eq. (1) a fold trains on (`fold_terms`) and the model trained on them
(`train_fold`). Pure in-memory: the fold job (fold_job.py) calls it and writes the result through run.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.taxonomy import NUM_CLASSES

from . import teacher
from .data import Arrays, PoolData, concat_arrays
from .families import FamilyConfig
from .folds import Fold
from .losses import TermBatch, augment, drop_rows, eq1_loss
from .models import build_model, predict_logits, row_tensors

EpochHook = Callable[[int, int, float], None]


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
    val_curve: list[float] = field(default_factory=list)  # the early-stopping figure (validation accuracy) per epoch


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
    curve: list[float] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(main.x))
        for start in range(0, len(order), cfg.batch_size):
            picks = [order[start:start + cfg.batch_size]]
            if len(picks[0]) < 2 or (cfg.drop_last and start and len(picks[0]) < cfg.batch_size):
                continue  # BatchNorm needs two rows; drop_last keeps an epoch's first batch even when it is short
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
        curve.append(acc)
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
                       finite, last_loss, {t.name: len(t.x) for t in terms}, curve)


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
