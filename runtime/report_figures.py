"""Figure building blocks both reports share (evaluation here, the pool report in bst_rt.train.report_pool).

matplotlib is the `[report]` extra: it is imported inside `pyplot()` only, so `import bst_rt.runtime...` never needs
it and a missing install is one line naming the extra. Colours: the Okabe-Ito palette (distinguishable with the
common colour-vision deficiencies) for parents and series, cividis for heatmaps.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import atomic_write_bytes
from .errors import BstError
from .taxonomy import CLASSES, PARENT_INDEX, PARENT_NAMES, PARENTS

#: Okabe-Ito, without black (text) and yellow (too light on white)
OKABE_ITO: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
PARENT_COLOURS: dict[str, str] = dict(zip(PARENTS, OKABE_ITO))
HEATMAP = "cividis"
EXTRA_HINT = "pip install 'bst-rt[report]'"


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or a one-line error naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise BstError(f"reports need matplotlib, which is not installed: {EXTRA_HINT}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "bst-rt", "font.size": 8, "axes.titlesize": 9})
    return plt


@dataclass(frozen=True)
class SavedFigure:
    stem: str
    png: Path
    svg: Path
    png_bytes: bytes


def save_figure(fig: Any, out_dir: Path, stem: str) -> SavedFigure:
    """PNG (150 dpi) and SVG of a figure, each written atomically; the figure is closed."""
    plt = pyplot()
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    out_dir = Path(out_dir)
    atomic_write_bytes(out_dir / f"{stem}.png", png.getvalue())
    atomic_write_bytes(out_dir / f"{stem}.svg", svg.getvalue())
    return SavedFigure(stem, out_dir / f"{stem}.png", out_dir / f"{stem}.svg", png.getvalue())


def class_label(code: str) -> str:
    """`code  Name` for axes: the taxonomy's class name beside the code."""
    from .taxonomy import CODE_TO_INDEX

    return f"{code}  {CLASSES[CODE_TO_INDEX[code]].name}" if code in CODE_TO_INDEX else code


def parent_spans() -> list[tuple[str, int, int]]:
    """(parent, first class index, last + 1) in label order (classes are grouped by parent)."""
    spans = []
    for k, parent in enumerate(PARENTS):
        idx = np.flatnonzero(PARENT_INDEX == k)
        spans.append((parent, int(idx[0]), int(idx[-1]) + 1))
    return spans


def parent_legend(ax: Any, *, loc: str = "upper right") -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=PARENT_COLOURS[p], label=f"{p}: {PARENT_NAMES[p]}") for p in PARENTS]
    ax.legend(handles=handles, loc=loc, fontsize=6, frameon=False)


def parent_bands_x(ax: Any, n_classes: int = len(CLASSES)) -> None:
    """Light parent colour bands behind a per-class bar chart (classes on x, label order)."""
    for parent, a, b in parent_spans():
        if a < n_classes:
            ax.axvspan(a - 0.5, min(b, n_classes) - 0.5, color=PARENT_COLOURS[parent], alpha=0.12, lw=0)


def heatmap(ax: Any, matrix: np.ndarray, labels: Sequence[str], *, boxes: bool = True, vmax: float = 1.0,
            title: str = "", xlabels: Sequence[str] | None = None) -> Any:
    """A row-normalised confusion heatmap (truth on rows), parents boxed and coloured on both axes."""
    from matplotlib.patches import Rectangle

    n = len(labels)
    image = ax.imshow(matrix, cmap=HEATMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(n), labels if xlabels is None else xlabels, rotation=90, fontsize=6)
    ax.set_yticks(range(n), labels, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if boxes:
        for parent, a, b in parent_spans():
            ax.add_patch(Rectangle((a - 0.5, a - 0.5), b - a, b - a, fill=False, lw=1.5,
                                   edgecolor=PARENT_COLOURS[parent]))
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            for i, tick in enumerate(ticks):
                tick.set_color(PARENT_COLOURS[PARENTS[PARENT_INDEX[i]]])
    return image


def row_normalised(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def grid(plt: Any, n: int, *, cols: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """A figure of n panels, `cols` a row; unused panels hidden."""
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
