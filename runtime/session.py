"""The one place an onnxruntime session is created: provider choice, threads, and a check of what really runs.

Silent CPU fallback is the most common complaint about ONNX runtimes, so after creating a session we compare the
providers onnxruntime actually uses with the ones asked for: 'cuda' that falls back raises, 'auto' that falls back
warns, and `session_provider(session)` tells callers what is in use.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Literal

from .errors import BstError

Provider = Literal["cpu", "cuda", "auto"]
_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class ProviderError(BstError):
    """The execution provider asked for is not available or was not used."""


def session_provider(session) -> str:
    """'cuda' or 'cpu': the provider the session's graph actually runs on first."""
    return "cuda" if session.get_providers()[0] == _ORT_NAMES["cuda"] else "cpu"


#: the pip distributions that provide the `onnxruntime` module; exactly one may be installed
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
NO_ORT_MESSAGE = ("no ONNX Runtime is installed: pip install 'bst-rt[cpu]' (CPU) or 'bst-rt[gpu]' (NVIDIA GPU); "
                  "the base install names neither so that a GPU install holds only one (docs/gpu.md)")


def installed_ort_distributions() -> list[str]:
    """Which of the onnxruntime wheels pip has installed (both at once clobber one another's files)."""
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


BOTH_ORT_MESSAGE = ("both onnxruntime and onnxruntime-gpu are installed; they overwrite each other's files, so which "
                    "one runs is accidental: pip uninstall -y onnxruntime onnxruntime-gpu, then pip install "
                    "'bst-rt[gpu]' (or '[cpu]')")


@functools.lru_cache(maxsize=1)
def warn_if_both_ort_wheels() -> bool:
    """Warn (once per process) when both onnxruntime wheels are installed; True when they are."""
    both = len(installed_ort_distributions()) > 1
    if both:
        warnings.warn(BOTH_ORT_MESSAGE, RuntimeWarning, stacklevel=3)
    return both


@functools.lru_cache(maxsize=1)
def import_onnxruntime():
    """The onnxruntime module, or a one-line BstError saying which extra to install."""
    warn_if_both_ort_wheels()
    try:
        import onnxruntime as ort
    except ImportError:
        raise BstError(NO_ORT_MESSAGE) from None
    return ort


@functools.lru_cache(maxsize=1)
def _preload_cuda_libraries(ort) -> None:
    """Let onnxruntime-gpu find pip-installed CUDA/cuDNN (nvidia-* wheels) before a CUDA session is created.

    `preload_dlls` exists from onnxruntime 1.21; it prints its own notes on stdout, which must stay clean for `--json`
    and CSV output, so they go to stderr.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(sys.stderr):
        try:
            preload()
        except Exception as exc:  # a failed preload must not hide the clearer fallback check below
            warnings.warn(f"onnxruntime.preload_dlls() failed ({exc})", RuntimeWarning, stacklevel=3)


def make_session(path: str | os.PathLike, provider: Provider = "cpu", threads: int | None = None):
    """An InferenceSession on `provider`; `threads` caps intra-op threads (None: onnxruntime's default)."""
    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise BstError(f"{path}: ONNX graph not found")
    if provider not in ("cpu", "cuda", "auto"):
        raise ProviderError(f"unknown provider {provider!r}: use cpu, cuda or auto")
    available = ort.get_available_providers()
    want_cuda = provider == "cuda" or (provider == "auto" and _ORT_NAMES["cuda"] in available)
    if provider == "cuda" and _ORT_NAMES["cuda"] not in available:
        raise ProviderError(
            f"provider 'cuda' asked for but this onnxruntime offers only {available}; "
            "install onnxruntime-gpu (pip install 'bst-rt[gpu]') or use --provider cpu")
    providers = [_ORT_NAMES["cuda"], _ORT_NAMES["cpu"]] if want_cuda else [_ORT_NAMES["cpu"]]
    if want_cuda:
        _preload_cuda_libraries(ort)
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise BstError(f"{path}: onnxruntime cannot load this graph ({exc})") from None
    used = session_provider(session)
    if want_cuda and used != "cuda":
        message = (f"{path.name}: CUDA was asked for but onnxruntime fell back to CPU "
                   "(CUDA/cuDNN libraries missing or incompatible)")
        if provider == "cuda":
            raise ProviderError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return session
