"""Exported fp32 CLAP graphs for `bst-train embed`, made once per (weights, tokenizer) and reused from a cache folder.

Exporting is the export floor's job, so `bst_rt.train.embed` never exports: it is handed a graph folder (or this
module's `graph_source`, which exports only when there is something to embed, so a finished rerun loads no CLAP).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from bst_rt.train.clap import ClapProvenance

GRAPH_CACHE = Path.home() / ".cache" / "bst-rt" / "clap-graphs"


def cache_key(prov: ClapProvenance, seed: int) -> str:
    """The cache folder's name: the weights, the tokenizer and `GRAPHS_VERSION`, so graphs exported by an older
    version of the graph code are never reused."""
    from .clap import GRAPHS_VERSION

    weights = f"ckpt-{prov.checkpoint_sha256[:16]}" if prov.checkpoint_sha256 else f"random-seed{seed}"
    return f"{weights}-{prov.tokenizer}-{prov.tokenizer_sha256[:12]}-graphs{GRAPHS_VERSION}"


def exported_graphs(clap_ckpt: Path | None, random_weights: bool, seed: int, tokenizer_dir: Path | None) -> Path:
    """The cache folder holding the fp32 graphs of this CLAP (checkpoint or seeded random weights + tokenizer),
    exported there on first use."""
    from bst_rt.train import clap

    from .clap import export_clap

    model = clap.load_clap(clap_ckpt, random_weights=random_weights, seed=seed, tokenizer_dir=tokenizer_dir)
    folder = GRAPH_CACHE / cache_key(model.bst_provenance, seed)
    if not (folder / "clap_parity.json").is_file():
        export_clap(model, folder, int8=False)
    return folder


def graph_source(clap_ckpt: Path | None, random_weights: bool, seed: int,
                 tokenizer_dir: Path | None) -> Callable[[], Path]:
    """`exported_graphs` deferred: `embed_dataset(graphs=...)` calls it only when some file is still missing."""
    return lambda: exported_graphs(clap_ckpt, random_weights, seed, tokenizer_dir)
