"""The one place an onnxruntime session is created: provider choice, threads, and a check of what really runs.

Silent CPU fallback is the most common complaint about ONNX runtimes, so after creating a session we compare the
providers onnxruntime actually uses with the ones asked for: 'cuda' that falls back raises, 'auto' that falls back
warns, and `session_provider(session)` tells callers what is in use.
"""
from __future__ import annotations

import os
import warnings
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


def make_session(path: str | os.PathLike, provider: Provider = "cpu", threads: int | None = None):
    """An InferenceSession on `provider`; `threads` caps intra-op threads (None: onnxruntime's default)."""
    import onnxruntime as ort

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
