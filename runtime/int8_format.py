"""The int8 weight formats a bundle's CLAP graphs may ship in, and whether this CPU runs each one exactly.

onnxruntime's dynamically quantised MatMul multiplies uint8 activations by the graph's weights. With int8 weights
(U8S8) its x86 kernels without VNNI/AMX (SSE4.1, AVX2, AVX-512 without VNNI) sum each pair of neighbouring
products in saturating 16-bit arithmetic (VPMADDUBSW): 255 * 127 * 2 = 64,770 is clamped to 32,767, so full-range
int8 weights give wrong numbers there. Two formats cannot saturate on any CPU:
- uint8 weights (U8U8: the kernels widen to 16 bits before multiplying), slower on VNNI/AMX CPUs;
- int8 weights in 7 bits (`reduce_range`, -64..63): the worst pair, 255 * 64 * 2 = 32,640, stays below 32,767, and
  VNNI/AMX run them at full U8S8 speed.
A format name this runtime does not know is refused (it cannot tell whether it is safe), and so is full-range int8
on an x86 CPU without VNNI/AMX. onnxruntime's own load-time rewrite of int8 weights to uint8
(`session.x64quantprecision`) is kept off by `session.make_session`: the format the manifest records is the one
that runs.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError


@dataclass(frozen=True)
class Int8Format:
    """One weight format of onnxruntime's dynamic quantisation (activations are always uint8, scaled per call)."""

    name: str
    weights: str  # "uint8" | "int8"
    reduce_range: bool  # weights in 7 bits
    per_channel: bool

    @property
    def can_saturate(self) -> bool:
        """True when onnxruntime's 16-bit pair sums can overflow (full-range int8 weights with uint8 activations)."""
        return self.weights == "int8" and not self.reduce_range


INT8_FORMATS = {f.name: f for f in (
    Int8Format("uint8-per-channel", "uint8", False, True),
    Int8Format("int8-7bit-per-tensor", "int8", True, False),
    Int8Format("int8-7bit-per-channel", "int8", True, True),
    Int8Format("int8-per-channel", "int8", False, True),
)}
#: what `bst-train export --int8` writes: never saturates, U8S8 speed on VNNI/AMX (chosen by bench/predict.py's
#: int8 format table)
DEFAULT_INT8_FORMAT = "int8-7bit-per-channel"
#: manifests before schema 1.3 did not record the format; every int8 graph their exporters wrote was this one
LEGACY_INT8_FORMAT = "uint8-per-channel"
#: /proc/cpuinfo flags under which onnxruntime's U8S8 kernels sum in 32 bits
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: the flags the bench and the refusal name
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """This CPU's feature flags from /proc/cpuinfo; None where they cannot be read (not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def u8s8_saturates(flags: frozenset[str] | None = None, machine: str | None = None) -> bool | None:
    """Whether onnxruntime's U8S8 kernels clamp pair sums to 16 bits on this CPU: False off x86 and with
    VNNI/AMX, True on x86 without them, None when x86 but the flags cannot be read."""
    if not is_x86(machine):
        return False
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return not any(f in flags for f in VNNI_FLAGS)


def check_int8_format(name: str, where: str, *, flags: frozenset[str] | None = None,
                      machine: str | None = None) -> Int8Format:
    """The format called `name`, or one BundleError line when this runtime cannot run it exactly here."""
    fmt = INT8_FORMATS.get(name)
    if fmt is None:
        raise BundleError(f"{where}: int8 format {name!r} is unknown to this bst-rt (knows {', '.join(INT8_FORMATS)}); "
                          "upgrade bst-rt, re-export with `bst-train export --int8`, or run without --int8")
    if fmt.can_saturate:
        saturates = u8s8_saturates(flags, machine)
        if saturates is not False:
            why = "has no VNNI/AMX" if saturates else "cannot be checked for VNNI/AMX"
            raise BundleError(f"{where}: int8 format {name!r} (full-range int8 weights) saturates on an x86 CPU "
                              f"without VNNI/AMX and this one {why}; re-export with --int8-format "
                              f"{DEFAULT_INT8_FORMAT} or run without --int8")
    return fmt


def describe_cpu(flags: frozenset[str] | None = None) -> str:
    """`avx2 yes, avx512f no, ...` for the bench header and error messages."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return "CPU flags unreadable"
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in REPORTED_FLAGS)
