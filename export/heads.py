"""The fused classifier graph: every fold model of the bundle's families, calibrated, fold-averaged and pooled.

One ONNX graph instead of 5×F small ones, so the runtime makes one `run` call per batch and cannot combine folds,
temperatures or pool weights differently from training. The definitions are the run's (docs/ARCHITECTURE.md):
family distribution = mean over folds of softmax(logits / T_fold); pool distribution = Σ_f w_pf · family_f.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from bst_rt.runtime.layout import EMBEDDING_DIM
from bst_rt.runtime.layout import HEADS_INPUTS as INPUT_NAMES
from bst_rt.runtime.layout import HEADS_OUTPUTS as OUTPUT_NAMES
from bst_rt.runtime.policy import normalise_weights
from bst_rt.train.run import Run, load_fold_models

OPSET = 17


@dataclass(frozen=True)
class HeadsLayout:
    """Order of the graph's family and pool axes; the manifest records it so the runtime can index by name."""

    families: tuple[str, ...]
    pools: tuple[str, ...]
    #: [P, F] non-negative weights, each row sums to one
    pool_weights: np.ndarray

    def to_json(self) -> dict:
        return {
            "families": list(self.families),
            "pools": list(self.pools),
            "pool_weights": self.pool_weights.astype(float).tolist(),
        }


def make_layout(pools: dict[str, dict[str, float]], always: Sequence[str] = ()) -> HeadsLayout:
    """Families = union of the pools' families plus `always` (the fallbacks), in first-seen order."""
    families: list[str] = []
    for weights in pools.values():
        families += [f for f in weights if f not in families and weights[f] > 0]
    families += [f for f in always if f not in families]
    matrix = np.zeros((len(pools), len(families)), dtype=np.float64)
    for p, (pool, weights) in enumerate(pools.items()):
        for family, w in normalise_weights(weights, f"pool {pool!r}").items():
            matrix[p, families.index(family)] = w
    return HeadsLayout(tuple(families), tuple(pools), matrix)


class FusedHeads(nn.Module):
    """(audio, text, masked_text) [B,512] -> family_probs [B,F,23], pool_probs [B,P,23]."""

    def __init__(self, fold_models: Sequence[Sequence[tuple[nn.Module, float]]], pool_weights: np.ndarray) -> None:
        super().__init__()
        self.families = nn.ModuleList(nn.ModuleList(m for m, _ in folds) for folds in fold_models)
        for f, folds in enumerate(fold_models):
            temps = torch.tensor([float(t) for _, t in folds], dtype=torch.float32)
            self.register_buffer(f"temperatures_{f}", temps)
        self.register_buffer("pool_weights", torch.as_tensor(pool_weights, dtype=torch.float32))
        self.eval()

    def forward(self, audio: torch.Tensor, text: torch.Tensor,
                masked_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_family = []
        for f, folds in enumerate(self.families):
            temps = getattr(self, f"temperatures_{f}")
            probs = [torch.softmax(m(audio, text, masked_text) / temps[k], dim=-1) for k, m in enumerate(folds)]
            per_family.append(torch.stack(probs, dim=0).mean(dim=0))
        family_probs = torch.stack(per_family, dim=1)
        pool_probs = torch.einsum("bfc,pf->bpc", family_probs, self.pool_weights)
        return family_probs, pool_probs


def build_heads(run: Run, layout: HeadsLayout) -> FusedHeads:
    """Wrap the run's fold models (loaded by the training side's own loader) in one module."""
    return FusedHeads([load_fold_models(run, family) for family in layout.families], layout.pool_weights)


def export_heads(heads: FusedHeads, path: Path, *, batch: int = 3) -> Path:
    """TorchScript export with a dynamic batch axis; the dummy batch is random so no folding hides a bug."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    dummy = tuple(torch.randn(batch, EMBEDDING_DIM, generator=gen) for _ in INPUT_NAMES)
    axes = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}
    with torch.no_grad():
        torch.onnx.export(
            heads, dummy, str(path), input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
    return path


def torch_heads(heads: FusedHeads, audio: np.ndarray, text: np.ndarray, masked: np.ndarray) -> tuple[np.ndarray, ...]:
    """The source the graph is validated against, in numpy."""
    with torch.no_grad():
        out = heads(*(torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in (audio, text, masked)))
    return tuple(o.numpy() for o in out)

