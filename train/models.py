"""The family models and their forward pass: one `nn.Module` interface,
`forward(audio [B,512], text [B,512], masked_text [B,512]) -> logits [B,23]` (unused inputs ignored).

The multimodal network is the official baseline's layer for layer (docs/method.md, "Baseline classifier");
`width_div` shrinks every hidden width for fast tests and is 1 in every shipped config. Forward has no
data-dependent control flow, so every family traces with `torch.onnx.export` in eval mode. `family_probs` is THE
deployment-time definition of a family's distribution: the heads graph is checked against it.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from bst_rt.runtime.layout import EMBEDDING_DIM
from bst_rt.runtime.taxonomy import NUM_CLASSES

from . import calibrate
from .data import Arrays
from .families import FamilyConfig


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
            nn.BatchNorm1d(EMBEDDING_DIM),
            nn.Linear(EMBEDDING_DIM, w), nn.LeakyReLU(0.01), nn.Dropout(dropout),
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


# ---------------------------------------------------------------- the forward pass


def row_tensors(x: Arrays, rows: np.ndarray, device: torch.device | None = None) -> list[torch.Tensor]:
    """The three model inputs of `rows` as tensors on `device`."""
    return [torch.from_numpy(np.ascontiguousarray(a[rows])).to(device or "cpu") for a in x.inputs()]


def predict_logits(model: torch.nn.Module, x: Arrays, batch: int = 4096) -> np.ndarray:
    """Logits [N,23] as CPU numpy, on whichever device the model's parameters are."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            rows = np.arange(start, min(start + batch, len(x)))
            out.append(model(*row_tensors(x, rows, device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def family_probs(models: Iterable[tuple[torch.nn.Module, float]], audio: np.ndarray, text: np.ndarray,
                 masked: np.ndarray) -> np.ndarray:
    """Deployment-time family distribution: mean over fold models of softmax(logits / T_fold), [N,23]."""
    x = Arrays(np.arange(len(audio)), np.zeros(len(audio), np.int64), np.zeros(len(audio)),
               np.asarray(audio, np.float32), np.asarray(text, np.float32), np.asarray(masked, np.float32))
    probs = [calibrate.calibrated_probs(predict_logits(m, x), t) for m, t in models]
    return np.mean(probs, axis=0).astype(np.float32)
