"""Where the torch side runs: `--device auto|cpu|cuda[:N]` for `bst-train train` and `bst-train embed --engine torch`.

`auto` takes CUDA only when it really works: `torch.cuda.is_available()` can be true on a machine whose driver or
architecture cannot run this torch build's kernels, so a tiny kernel is launched and its result checked before a
CUDA device is accepted. An explicit `cuda[:N]` that fails the same check is refused in one line (never a silent
CPU fallback for an explicit request). The resolved name ("cpu", "cuda:0") is what the registry records.

CPU runs are bit-identical run to run (same torch build and thread count). CUDA runs are not bit-identical to CPU
runs (other kernels, other summation order): docs/scale.md gives the tolerance to expect.
"""
from __future__ import annotations

import re

import torch

from bst_rt.runtime.errors import BstError

_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def cuda_works(index: int = 0) -> tuple[bool, str]:
    """(True, "") when a small matmul on cuda:index gives the CPU's answer; else (False, why)."""
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is false (no CUDA build, driver or device)"
    if index >= torch.cuda.device_count():
        return False, f"cuda:{index} does not exist ({torch.cuda.device_count()} CUDA device(s))"
    try:
        a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        got = (a.to(f"cuda:{index}") @ a.T.to(f"cuda:{index}")).cpu()
        torch.cuda.synchronize(index)
    except Exception as exc:  # noqa: BLE001 - any driver/kernel failure means "does not work"
        return False, f"a test kernel failed on cuda:{index} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    if not torch.equal(got, a @ a.T):
        return False, f"a test kernel on cuda:{index} returned wrong values"
    return True, ""


def check_spec(spec: str) -> str:
    """The normalised spec, or a one-line error for one that is none of auto, cpu, cuda, cuda:N."""
    spec = (spec or "cpu").strip().lower()
    if not _SPEC.match(spec):
        raise BstError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    return spec


def resolve_device(spec: str = "cpu") -> torch.device:
    """'auto' -> cuda:0 when it works, else cpu; 'cpu'; 'cuda' / 'cuda:N' -> that device or a one-line error."""
    spec = check_spec(spec)
    if spec == "cpu":
        return torch.device("cpu")
    index = int(spec.split(":", 1)[1]) if ":" in spec else 0
    ok, why = cuda_works(index)
    if spec == "auto":
        return torch.device(f"cuda:{index}") if ok else torch.device("cpu")
    if not ok:
        raise BstError(f"--device {spec}: CUDA does not work here: {why}")
    return torch.device(f"cuda:{index}")


def device_name(device: torch.device) -> str:
    """'cpu' or 'cuda:N (GPU model)' for the registry and the report."""
    if device.type != "cuda":
        return "cpu"
    index = device.index or 0
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def clap_to_device(model, device: torch.device):
    """Move a laion-clap `CLAP_Module` (built on the CPU by `bst_rt.train.clap.load_clap`) to `device`; its embedding
    helpers move their inputs to the model's device and return CPU numpy arrays."""
    if device.type != "cpu":
        model.model.to(device)
        model.device = device
    return model
