"""The one place an onnxruntime session is created: provider choice, threads, and a check of what really runs.

Silent CPU fallback is the most common complaint about ONNX runtimes, so after creating a session we compare the
providers onnxruntime actually uses with the ones asked for: 'cuda' that falls back raises, 'auto' that falls back
warns, and `session_provider(session)` tells callers what is in use. Besides the CLI's 'cpu' | 'cuda' | 'auto',
any onnxruntime provider passes through in onnxruntime's own form, `[name | (name, options)]` (TensorRT, CoreML,
DirectML, OpenVINO, CUDA with a device id, ...); each one named must then really be in use, else ProviderError.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Tuple, Union

from .errors import BstError



class Provider(str, Enum):
    """The named choices (`bst-rt --provider`, `bst-train export/embed --provider`, `Predictor.load`): 'auto' picks
    CUDA only when it really works. A str enum, so the plain strings 'cpu' | 'cuda' | 'auto' are the same values."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


#: one onnxruntime provider as onnxruntime spells it: a name, or (name, provider options) e.g. a device id
ProviderEntry = Union[str, Tuple[str, Mapping[str, Any]]]
#: what callers may ask for: the CLI's 'cpu' | 'cuda' | 'auto', or onnxruntime's own `providers=[...]` list
Providers = Union[Provider, Literal["cpu", "cuda", "auto"], Sequence[ProviderEntry]]
_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_SHORT_NAMES = {v: k for k, v in _ORT_NAMES.items()}


class ProviderError(BstError):
    """The execution provider asked for is not available or was not used."""


def overall_provider(providers: Mapping[str, str]) -> str:
    """The one provider every graph runs on ('cuda', 'cpu', ...), 'mixed' when graphs (or workers) differ, 'none'
    when nothing ran (a resumed Ray run with nothing left to predict)."""
    used = set(providers.values())
    return used.pop() if len(used) == 1 else "mixed" if used else "none"


def session_provider(session: Any) -> str:
    """The provider the session's graph actually runs on first: 'cuda', 'cpu', or onnxruntime's name for any
    other (e.g. 'TensorrtExecutionProvider')."""
    first = session.get_providers()[0]
    return _SHORT_NAMES.get(first, first)


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
def import_onnxruntime() -> Any:
    """The onnxruntime module, or a one-line BstError saying which extra to install."""
    warn_if_both_ort_wheels()
    try:
        import onnxruntime as ort
    except ImportError:
        raise BstError(NO_ORT_MESSAGE) from None
    return ort


@functools.lru_cache(maxsize=1)
def _preload_cuda_libraries(ort: Any) -> None:
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


def resolve_providers(spec: Providers, available: Sequence[str], known: Sequence[str]
                      ) -> tuple[list[ProviderEntry], list[str], bool]:
    """onnxruntime's `providers` list for `spec`, the names that must really be in use afterwards, and whether a
    fallback to the CPU only warns ('auto'). A list passes through as onnxruntime's own convention
    (`[name | (name, options)]`), CPU appended as the last resort as onnxruntime does itself; an unknown or
    unavailable name is one clear ProviderError."""
    if isinstance(spec, str):
        if spec not in ("cpu", "cuda", "auto"):
            raise ProviderError(f"unknown provider {spec!r}: use cpu, cuda or auto, or a list of onnxruntime "
                                f"provider names (this onnxruntime offers {', '.join(available)})")
        if spec == "cuda" and _ORT_NAMES["cuda"] not in available:
            raise ProviderError(
                f"provider 'cuda' asked for but this onnxruntime offers only {available}; "
                "install onnxruntime-gpu (pip install 'bst-rt[gpu]') or use --provider cpu")
        if spec == "cpu" or _ORT_NAMES["cuda"] not in available:
            return [_ORT_NAMES["cpu"]], [], False
        return [_ORT_NAMES["cuda"], _ORT_NAMES["cpu"]], [_ORT_NAMES["cuda"]], spec == "auto"
    entries = list(spec)
    if not entries:
        raise ProviderError("empty providers list: name at least one onnxruntime provider")
    names = []
    for entry in entries:
        name = entry if isinstance(entry, str) else entry[0] if isinstance(entry, tuple) and len(entry) == 2 else None
        if not isinstance(name, str):
            raise ProviderError(f"bad providers entry {entry!r}: give a provider name or a (name, options) pair")
        if name not in known:
            raise ProviderError(f"unknown onnxruntime provider {name!r}: known names are {', '.join(known)}")
        if name not in available:
            raise ProviderError(f"provider {name!r} is not available in this onnxruntime build (it offers "
                                f"{', '.join(available)}); install the onnxruntime package built with it")
        names.append(name)
    if _ORT_NAMES["cpu"] not in names:
        entries.append(_ORT_NAMES["cpu"])
    return entries, [n for n in names if n != _ORT_NAMES["cpu"]], False


def make_session(path: str | os.PathLike, provider: Providers = "cpu", threads: int | None = None) -> Any:
    """An InferenceSession on `provider` ('cpu' | 'cuda' | 'auto', or onnxruntime's `providers` list);
    `threads` caps intra-op threads (None: onnxruntime's default). Raises ProviderError when a provider asked
    for is not really in use (`session.get_providers()`); 'auto' only warns when CUDA falls back."""
    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise BstError(f"{path}: ONNX graph not found")
    available = ort.get_available_providers()
    providers, required, warn_only = resolve_providers(provider, available, ort.get_all_providers())
    if _ORT_NAMES["cuda"] in required:
        _preload_cuda_libraries(ort)
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # onnxruntime's workers spin after each parallel section by default; they then compete with the audio prefetch
    # thread and the decision code for the same cores (bench/predict.py measures the difference)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise BstError(f"{path}: onnxruntime cannot load this graph ({exc})") from None
    missing = [name for name in required if name not in session.get_providers()]
    if missing:
        asked = ", ".join("CUDA" if n == _ORT_NAMES["cuda"] else n for n in missing)
        message = (f"{path.name}: {asked} was asked for but onnxruntime fell back to CPU "
                   "(CUDA/cuDNN or the provider's libraries missing or incompatible)")
        if not warn_only:
            raise ProviderError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return session
