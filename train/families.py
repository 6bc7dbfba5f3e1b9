"""Classifier families: one JSON config each (`configs/<name>.json`, stem = name) on one model interface,
`forward(audio [B,512], text [B,512], masked_text [B,512]) -> logits [B,23]`, plus the loss terms of eq. (1).

The multimodal network is the official baseline's (task facts §7) layer for layer; `width_div` shrinks every hidden
width for fast tests and is 1 in every shipped config. Forward has no data-dependent control flow, so every family
traces with `torch.onnx.export` in eval mode. Augmentation and losses live here too: they are part of a family's
recipe, while the loop that applies them is in `pool.py`.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.layout import EMBEDDING_DIM
from bst_rt.runtime.taxonomy import NUM_CLASSES, PARENT_INDEX, PARENTS

EMBED_DIM = EMBEDDING_DIM
TEXT_INPUTS = ("text", "masked")
ARCHS = ("multimodal", "audio", "text")
CS_MODES = ("none", "naive", "teacher")


@dataclass
class CsConfig:
    """How BSD35k-CS enters training: not at all, as if clean (`naive`), or through a fold teacher (eq. 1)."""

    mode: str = "none"
    teacher: str = "baseline"
    lambda_soft: float = 0.3
    lambda_hard: float = 0.2
    hard_threshold: float = 0.9
    label_trust: float = 0.0  # weight of the uploader's label in the soft target (teacher.label_posterior)
    weight: float = 1.0  # sample weight of CS rows in `naive` mode


@dataclass
class FamilyConfig:
    """Everything that defines a family; a seed is a training parameter, not part of the family."""

    name: str
    description: str = ""
    group: str = "core"  # ensemble cap group
    arch: str = "multimodal"
    text_input: str = "text"
    width_div: int = 1
    branch_blocks: int = 3  # residual blocks per modality branch (official 3)
    head_blocks: int = 2  # residual blocks in the head (official 2)
    dropout: float = 0.1
    epochs: int = 100
    patience: int = 15
    batch_size: int = 64
    drop_last: bool = True  # official loader: the last incomplete batch of an epoch is not trained on
    lr: float = 1e-3
    weight_decay: float = 1e-5
    step_size: int = 20
    gamma: float = 0.5
    label_smoothing: float = 0.01
    noise_std: float = 1e-4
    zero_dims_max: int = 358
    text_dropout: float = 0.0  # metadata-dropout: whole text embedding zeroed at this rate
    logit_adjust_tau: float = 0.0  # prior-corrected: logit-adjusted loss (Menon et al.)
    hier_weight: float = 0.0  # lambda_hier of eq. (1)
    confidence_power: float = 0.0  # confidence-weighted: sample weight (confidence / 5) ** power
    cs: CsConfig = field(default_factory=CsConfig)
    external: list[str] = field(default_factory=list)  # external dataset names (train/external.py)
    external_weight: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.cs, dict):
            self.cs = CsConfig(**self.cs)
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch must be one of {ARCHS}")
        if self.text_input not in TEXT_INPUTS:
            problems.append(f"text_input must be one of {TEXT_INPUTS}")
        if self.cs.mode not in CS_MODES:
            problems.append(f"cs.mode must be one of {CS_MODES}")
        if self.width_div < 1 or 128 % self.width_div:
            problems.append("width_div must divide 128")
        if problems:
            raise BstError(f"family {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, overrides: dict | None) -> "FamilyConfig":
        """A copy with top-level keys replaced (nested `cs` merged), for reduced-epoch or small-width runs."""
        if not overrides:
            return copy.deepcopy(self)
        data = self.to_dict()
        for key, value in overrides.items():
            if key not in data:
                raise BstError(f"unknown family option {key!r} (known: {', '.join(sorted(data))})")
            data[key] = {**data[key], **value} if key == "cs" else value
        return FamilyConfig(**data)

    @property
    def uses_cs(self) -> bool:
        return self.cs.mode != "none"

    @property
    def treats_cs_as_clean(self) -> bool:
        """BSD35k-CS uploader labels used as clean targets: seed Table 1 says they are not, so such a family is
        trained and reported as a comparison but never enters a pool."""
        return self.cs.mode == "naive"


def configs_dir() -> Path:
    return Path(str(resources.files("bst_rt.train") / "configs"))


def list_families() -> list[str]:
    """Family names = config file stems, sorted (a folder scan, as open_clip does)."""
    return sorted(p.stem for p in configs_dir().glob("*.json"))


def load_family(name: str, path: Path | None = None) -> FamilyConfig:
    path = path or configs_dir() / f"{name}.json"
    if not path.is_file():
        raise BstError(f"no family config {path} (known families: {', '.join(list_families())})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BstError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    known = {f.name for f in fields(FamilyConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BstError(f"{path}: unknown keys {unknown}")
    data["name"] = path.stem
    return FamilyConfig(**data)


# ---------------------------------------------------------------- modules (task facts §7)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(width, inner), nn.BatchNorm1d(inner), nn.LeakyReLU(0.01), nn.Dropout(dropout),
            nn.Linear(inner, width), nn.BatchNorm1d(width),
        )
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class Branch(nn.Module):
    """One modality: BN(512) → 512 → 3 residual blocks (inner 1024) → 256 → 128 → BN(128)."""

    def __init__(self, div: int, dropout: float, blocks: int = 3) -> None:
        super().__init__()
        w, inner, proj, out = 512 // div, 1024 // div, 256 // div, 128 // div
        self.net = nn.Sequential(
            nn.BatchNorm1d(EMBED_DIM),
            nn.Linear(EMBED_DIM, w), nn.LeakyReLU(0.01), nn.Dropout(dropout),
            *[ResidualBlock(w, inner, dropout) for _ in range(blocks)],
            nn.Linear(w, proj), nn.LeakyReLU(0.01), nn.Dropout(dropout),
            nn.Linear(proj, out), nn.BatchNorm1d(out),
        )
        self.out_dim = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AttentionFusion(nn.Module):
    """concat → Linear(2d→d) → tanh → Linear(d→2) → softmax: one weight per modality, fused = weighted sum."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(2 * dim, dim), nn.Tanh(), nn.Linear(dim, 2))
        self.drop = nn.Dropout(dropout)

    def forward(self, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.score(torch.cat([a, t], dim=1)), dim=1)
        return self.drop(w[:, 0:1] * a + w[:, 1:2] * t)


class Head(nn.Module):
    """128 → 256 → 128 → 64, two residual blocks at 64 (inner 128), 64 → 32 → 23. The official head thins its
    dropout towards the output: d after the first two projections, d/2 after the third and inside the residual
    blocks, d/4 before the class layer (docs/baseline.md lists every rate)."""

    def __init__(self, in_dim: int, div: int, dropout: float, blocks: int = 2) -> None:
        super().__init__()
        h1, h2, h3, h4 = (max(32, w // div) for w in (256, 128, 64, 32))
        self.net = nn.Sequential(
            nn.Linear(in_dim, h1), nn.LeakyReLU(0.01), nn.Dropout(dropout),
            nn.Linear(h1, h2), nn.LeakyReLU(0.01), nn.Dropout(dropout),
            nn.Linear(h2, h3), nn.LeakyReLU(0.01), nn.Dropout(dropout / 2),
            *[ResidualBlock(h3, 2 * h3, dropout / 2) for _ in range(blocks)],
            nn.Linear(h3, h4), nn.LeakyReLU(0.01), nn.Dropout(dropout / 4),
            nn.Linear(h4, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultimodalNet(nn.Module):
    """The official multimodal baseline; `text_input="masked"` feeds the class-word-masked text embedding."""

    def __init__(self, cfg: FamilyConfig) -> None:
        super().__init__()
        self.use_masked = cfg.text_input == "masked"
        self.audio = Branch(cfg.width_div, cfg.dropout, cfg.branch_blocks)
        self.text = Branch(cfg.width_div, cfg.dropout, cfg.branch_blocks)
        self.fusion = AttentionFusion(self.audio.out_dim, cfg.dropout)
        self.head = Head(self.audio.out_dim, cfg.width_div, cfg.dropout, cfg.head_blocks)

    def forward(self, audio: torch.Tensor, text: torch.Tensor, masked_text: torch.Tensor) -> torch.Tensor:
        t = masked_text if self.use_masked else text
        return self.head(self.fusion(self.audio(audio), self.text(t)))


class UnimodalNet(nn.Module):
    """One branch and the head: `audio-only` (runtime fallback for empty metadata) or `text-only` (missing audio)."""

    def __init__(self, cfg: FamilyConfig) -> None:
        super().__init__()
        self.modality = cfg.arch
        self.use_masked = cfg.text_input == "masked"
        self.branch = Branch(cfg.width_div, cfg.dropout, cfg.branch_blocks)
        self.head = Head(self.branch.out_dim, cfg.width_div, cfg.dropout, cfg.head_blocks)

    def forward(self, audio: torch.Tensor, text: torch.Tensor, masked_text: torch.Tensor) -> torch.Tensor:
        if self.modality == "audio":
            x = audio
        else:
            x = masked_text if self.use_masked else text
        return self.head(self.branch(x))


def build_model(cfg: FamilyConfig) -> nn.Module:
    return MultimodalNet(cfg) if cfg.arch == "multimodal" else UnimodalNet(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- augmentation and losses


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
