"""Augmentation and the terms of eq. (1) (docs/method.md, "Eq. 1"): L = L_clean + lambda_s L_soft + lambda_h L_hard
+ lambda_hier L_hier. They are part of a family's recipe (`FamilyConfig`); `fold_train.train_fold` applies them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bst_rt.runtime.taxonomy import PARENT_INDEX, PARENTS

from .families import FamilyConfig


def augment(x: torch.Tensor, cfg: FamilyConfig, gen: torch.Generator) -> torch.Tensor:
    """Official augmentation: Gaussian noise (std 1e-4) and k random dimensions zeroed per row, k ~ U[1, 358]."""
    x = x + cfg.noise_std * torch.randn(x.shape, generator=gen)
    if cfg.zero_dims_max > 0:
        k = torch.randint(1, cfg.zero_dims_max + 1, (x.shape[0], 1), generator=gen)
        ranks = torch.rand(x.shape, generator=gen).argsort(dim=1).argsort(dim=1)
        x = x * (ranks >= k).to(x.dtype)
    return x


def drop_rows(x: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    """Zero whole rows at `rate` (metadata dropout: the model must cope with no text at all)."""
    if rate <= 0:
        return x
    keep = (torch.rand((x.shape[0], 1), generator=gen) >= rate).to(x.dtype)
    return x * keep


_PARENT_ONEHOT = torch.from_numpy((PARENT_INDEX[:, None] == np.arange(len(PARENTS))[None, :]).astype(np.float32))


def parent_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log of summed child probabilities per parent, [B,23] → [B,5] (L_hier's input)."""
    log_p = torch.log_softmax(logits, dim=1)
    masked = log_p[:, :, None] + torch.log(_PARENT_ONEHOT.to(logits.device))[None]
    return torch.logsumexp(masked, dim=1)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def hard_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, cfg: FamilyConfig,
              log_prior: torch.Tensor | None) -> torch.Tensor:
    """Label-smoothed CE (+ logit adjustment by tau·log prior when the family is prior-corrected)."""
    if cfg.logit_adjust_tau and log_prior is not None:
        logits = logits + cfg.logit_adjust_tau * log_prior
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=cfg.label_smoothing)
    return weighted_mean(ce, weights)


def soft_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy to teacher distributions (L_soft)."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def hier_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_hier: NLL of the true parent under summed child probabilities."""
    parents = torch.from_numpy(PARENT_INDEX).to(labels.device)[labels]
    nll = F.nll_loss(parent_log_probs(logits), parents, reduction="none")
    return weighted_mean(nll, weights)


@dataclass
class TermBatch:
    """One eq. (1) term's share of a training batch: its logits, targets (int [n] or soft [n,23]), row weights and
    lambda. `main` marks the clean BSD10k term, the only one that gets logit adjustment and L_hier."""

    name: str
    logits: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    lam: float
    main: bool = False


def eq1_loss(batches: list[TermBatch], cfg: FamilyConfig,
             log_prior: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. (1): L = L_clean + lambda_s L_soft + lambda_h L_hard + lambda_hier L_hier, the lambdas carried by the terms
    (cs.lambda_soft / cs.lambda_hard, external_weight) and `cfg.hier_weight`. Returns the total and each unweighted
    term's value (`hier` for L_hier), so tests and logs can check the composition."""
    total = torch.zeros((), device=batches[0].logits.device if batches else None)
    parts: dict[str, float] = {}
    for b in batches:
        if b.targets.ndim == 2:
            value = soft_loss(b.logits, b.targets)
        else:
            value = hard_loss(b.logits, b.targets, b.weights, cfg, log_prior if b.main else None)
        parts[b.name] = float(value.detach())
        total = total + b.lam * value
        if cfg.hier_weight and b.main and b.targets.ndim == 1:
            hier = hier_loss(b.logits, b.targets, b.weights)
            parts["hier"] = float(hier.detach())
            total = total + cfg.hier_weight * hier
    return total, parts
