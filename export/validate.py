"""Every exported graph is run in onnxruntime against its torch/sklearn source at export time.

Unlike optimum, which only warns, a graph over its tolerance fails the export: a bundle never holds a graph whose
parity was not measured, and the measured numbers go into the manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.session import make_session

#: max |ORT - source| allowed per graph kind (fp32); int8 variants are judged by cosine / label agreement instead
TOLERANCES: dict[str, float] = {"heads": 1e-5, "ranker": 1e-5, "audio_encoder": 1e-5, "text_encoder": 1e-5}
#: smallest row cosine an int8 encoder's embeddings may have to its fp32 graph's. 7-bit weights (the default format,
#: the one exact on every CPU) have half the levels of 8-bit ones, so this floor sits below what uint8 weights reach;
#: what matters downstream, label agreement with fp32, is asserted on the labels themselves
INT8_MIN_COSINE = 0.998


class ParityError(BstError):
    """An exported graph disagrees with its source beyond the tolerance; the export is refused."""


def run_graph(path: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = make_session(path, provider="cpu", threads=None)
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}  # the exporter drops inputs no family reads
    return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted})))


def check_close(name: str, got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], tol: float) -> dict:
    """Max abs diff per output; raises ParityError naming the graph, output and error when over `tol`."""
    report: dict = {"tolerance": tol, "max_abs_diff": {}}
    for key, ref in want.items():
        out = np.asarray(got[key])
        ref = np.asarray(ref)
        if out.shape != ref.shape:
            raise ParityError(f"{name}: output {key} has shape {out.shape}, source has {ref.shape}")
        err = max_abs_diff(out, ref)
        report["max_abs_diff"][key] = err
        if not err <= tol:
            raise ParityError(f"{name}: output {key} differs from its source by {err:.3g} > tolerance {tol:.1g}")
    return report


def max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| in float64 (0 for empty arrays): the fp32 parity measure of every graph."""
    got, want = np.asarray(got), np.asarray(want)
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0


def check_limits(name: str, numbers: Mapping[str, float], max_abs: Mapping[str, float],
                 min_cosine: Mapping[str, float]) -> None:
    """Numbers measured earlier (e.g. a CLAP graph folder's parity file), re-judged: each `max_abs` key must be at or
    below its limit and each `min_cosine` key present at or above its; raises ParityError naming every breach."""
    bad = [k for k, lim in max_abs.items() if not numbers[k] <= lim]
    bad += [k for k, lim in min_cosine.items() if k in numbers and not numbers[k] >= lim]
    if bad:
        raise ParityError(f"{name} parity failed: {', '.join(f'{k}={numbers[k]:.3g}' for k in bad)}")


def check_labels(name: str, got: np.ndarray, want: np.ndarray) -> dict:
    agree = float(np.mean(np.asarray(got) == np.asarray(want))) if len(want) else 1.0
    if agree < 1.0:
        raise ParityError(f"{name}: labels differ from its source on {(1 - agree):.1%} of the validation rows")
    return {"label_agreement": agree, "rows": int(len(want))}


def validate_graph(
    name: str, path: Path, feeds: Mapping[str, np.ndarray], source: Callable[[], Mapping[str, np.ndarray]],
    tol: float | None = None,
) -> dict:
    """ORT(path, feeds) vs source(); returns the parity record for the manifest."""
    got = run_graph(path, feeds)
    want = source()
    record = check_close(name, got, want, TOLERANCES[name] if tol is None else tol)
    record["batch"] = int(next(iter(feeds.values())).shape[0])
    return record


def cosine_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row cosine between two embedding batches (int8 vs fp32)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(num / np.clip(den, 1e-12, None)))
