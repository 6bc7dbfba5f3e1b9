"""The CLAP fusion front end as one ONNX graph: 48 kHz mono waveform (+ its length) -> `mel_fusion`, `longer`.

The same arithmetic as `bst_rt.runtime.audio.waveform_to_mel_fusion` (numpy), from standard ONNX ops only, so a client
in any language with onnxruntime featurises a clip without re-implementing the mel front end:

    int16 round trip (clip, NaN -> 0, x32767 truncated, /32767 in float64) -> repeat-pad to 10 s when shorter
    -> reflect-padded, centred STFT (DFT, periodic Hann, float64) -> power @ mel filterbank -> 10 log10(max(., 1e-10))
    -> float32 mel [T, 64] -> `CHUNK_RULE` chunks + the antialiased bilinear shrink of the whole mel to 1001 rows.

Branch-free: a clip of at most 10 s gives T = 1001, for which the three chunks start at 0 and the shrink is the
identity (weights exactly 1 and 0), so the same graph yields numpy's four copies. The shrink reads, per output row,
only the few input rows the numpy loop reads (a gather of [1001, W] rows, W ~ 2 T / 1001), so memory stays linear in
the clip's length. Decoding, the channel mean and the soxr-HQ resampling to 48 kHz stay outside (docs/portable.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bst_rt.runtime import audio as audio_module

OPSET = 17
INPUTS = ("waveform", "length")
OUTPUTS = ("mel_fusion", "longer")
D, F, I64 = TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.INT64


class _G:
    """Tiny graph builder: `op(...)` appends a node and returns its (unique) output name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value, dtype=None, name: str | None = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        self._n += 1
        name = name or f"c{self._n}"
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, n_out: int = 1, name: str | None = None, **attrs):
        self._n += 1
        outs = [name] if (name and n_out == 1) else [f"{op_type.lower()}{self._n}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs


def _round_trip(g: _G, wave: str) -> str:
    """laion-clap's float32 -> int16 -> float32 (bst_rt.runtime.audio.int16_round_trip); idempotent."""
    clean = g.op("Where", g.op("IsNaN", wave), g.const(0.0, np.float32), wave)
    clipped = g.op("Clip", clean, g.const(-1.0, np.float32), g.const(1.0, np.float32))
    q = g.op("Cast", g.op("Mul", clipped, g.const(audio_module.INT16_SCALE, np.float32)), to=TensorProto.INT16)
    return g.op("Cast", g.op("Div", g.op("Cast", q, to=D), g.const(audio_module.INT16_SCALE, np.float64)), to=F)


def _repeat_pad(g: _G, wave: str, n: str) -> str:
    """Clips of at most 10 s: tile floor(480000 / n) times, zero-pad to 480000; longer clips pass unchanged."""
    clip = g.const([audio_module.CLIP_SAMPLES], np.int64)
    reps = g.op("Max", g.op("Div", clip, n), g.const([1], np.int64))
    tiled = g.op("Tile", wave, reps)
    tiled_n = g.op("Shape", tiled)
    pad = g.op("Max", g.op("Sub", clip, tiled_n), g.const([0], np.int64))
    pads = g.op("Concat", g.const([0], np.int64), pad, axis=0)
    return g.op("Pad", tiled, pads, g.const(0.0, np.float32), mode="constant")


def _log_mel(g: _G, wave: str) -> str:
    """[T, 64] float32: numpy `log_mel` (centred reflect-padded STFT in float64, power, mel, dB)."""
    half = audio_module.N_FFT // 2
    x = g.op("Cast", wave, to=D)
    padded = g.op("Pad", x, g.const([half, half], np.int64), mode="reflect")
    signal = g.op("Unsqueeze", g.op("Unsqueeze", padded, g.const([0], np.int64)), g.const([2], np.int64))
    window = g.const(audio_module._hann(), np.float64)
    spec = g.op("STFT", signal, g.const(audio_module.HOP_SAMPLES, np.int64), window, g.const(audio_module.N_FFT, np.int64), onesided=1)
    # spec [1, T, 513, 2] (real, imaginary)
    power = g.op("ReduceSum", g.op("Mul", spec, spec), g.const([3], np.int64), keepdims=0)
    mel = g.op("MatMul", g.op("Squeeze", power, g.const([0], np.int64)), g.const(audio_module.mel_filterbank(), np.float64))
    floor = g.op("Max", mel, g.const(1e-10, np.float64))
    db = g.op("Mul", g.op("Log", floor), g.const(10.0 / np.log(10.0), np.float64))
    return g.op("Cast", db, to=F)


def _chunk_starts(g: _G, frames: str) -> list[str]:
    """`chunk_starts`: np.array_split(range(T - 1000), 3), middle element of each part (0 for an empty part)."""
    length = g.op("Sub", frames, g.const([audio_module.CHUNK_FRAMES - 1], np.int64))
    three = g.const([3], np.int64)
    q, r = g.op("Div", length, three), g.op("Mod", length, three)
    zero = g.const([0], np.int64)
    starts, begin = [], zero
    for k in range(3):
        size = g.op("Add", q, g.op("Cast", g.op("Greater", r, g.const([k], np.int64)), to=I64))
        mid = g.op("Add", begin, g.op("Div", size, g.const([2], np.int64)))
        starts.append(g.op("Where", g.op("Greater", size, zero), mid, zero))
        begin = g.op("Add", begin, size)
    return starts


def _shrink(g: _G, mel: str, frames: str) -> str:
    """`shrink_frames` (T >= 1001 here, so support = scale): per output row the input rows it reads, weighted."""
    n_in = g.op("Cast", frames, to=D)  # [1]
    scale = g.op("Div", n_in, g.const([float(audio_module.CHUNK_FRAMES)], np.float64))
    inv = g.op("Div", g.const([1.0], np.float64), scale)
    centre = g.op("Mul", scale, g.const(np.arange(audio_module.CHUNK_FRAMES) + 0.5, np.float64))  # [1001]
    lo = g.op("Max", g.op("Cast", g.op("Floor", g.op("Add", g.op("Sub", centre, scale), g.const(0.5, np.float64))),
                          to=I64), g.const(0, np.int64))
    hi = g.op("Min", g.op("Cast", g.op("Floor", g.op("Add", g.op("Add", centre, scale), g.const(0.5, np.float64))),
                          to=I64), frames)
    width = g.op("ReduceMax", g.op("Sub", hi, lo), keepdims=1)
    offs = g.op("Range", g.const(0, np.int64), g.op("Squeeze", width, g.const([0], np.int64)), g.const(1, np.int64))
    idx = g.op("Add", g.op("Unsqueeze", lo, g.const([1], np.int64)), offs)  # [1001, W]
    inside = g.op("Less", idx, g.op("Unsqueeze", hi, g.const([1], np.int64)))
    dist = g.op("Mul", g.op("Add", g.op("Sub", g.op("Cast", idx, to=D), g.op("Unsqueeze", centre, g.const([1], np.int64))),
                            g.const(0.5, np.float64)), inv)
    w = g.op("Max", g.op("Sub", g.const(1.0, np.float64), g.op("Abs", dist)), g.const(0.0, np.float64))
    w = g.op("Where", inside, w, g.const(0.0, np.float64))
    w = g.op("Div", w, g.op("ReduceSum", w, g.const([1], np.int64), keepdims=1))
    safe = g.op("Min", idx, g.op("Sub", frames, g.const([1], np.int64)))
    rows = g.op("Gather", g.op("Cast", mel, to=D), safe, axis=0)  # [1001, W, 64]
    out = g.op("ReduceSum", g.op("Mul", rows, g.op("Unsqueeze", w, g.const([2], np.int64))), g.const([1], np.int64),
               keepdims=0)
    return g.op("Cast", out, to=F)


def build_frontend() -> onnx.ModelProto:
    """waveform [samples] float32, length [] int64 (samples to use, <= len(waveform); > 0)
    -> mel_fusion [1, 4, 1001, 64] float32, longer [1] bool (the audio encoder's inputs at batch 1)."""
    g = _G()
    n = g.op("Reshape", "length", g.const([1], np.int64))
    wave = g.op("Slice", "waveform", g.const([0], np.int64), n, g.const([0], np.int64))
    wave = _round_trip(g, wave)
    padded = _repeat_pad(g, wave, n)
    mel = _log_mel(g, padded)  # [T, 64]
    frames = g.op("Slice", g.op("Shape", mel), g.const([0], np.int64), g.const([1], np.int64))
    parts = [_shrink(g, mel, frames)]
    for start in _chunk_starts(g, frames):
        parts.append(g.op("Slice", mel, start, g.op("Add", start, g.const([audio_module.CHUNK_FRAMES], np.int64)),
                          g.const([0], np.int64)))
    stacked = g.op("Concat", *[g.op("Unsqueeze", p, g.const([0], np.int64)) for p in parts], axis=0)
    g.op("Unsqueeze", stacked, g.const([0], np.int64), name="mel_fusion")
    g.op("Greater", frames, g.const([audio_module.CHUNK_FRAMES], np.int64), name="longer")
    graph = helper.make_graph(
        g.nodes, "bst_portable_frontend",
        [helper.make_tensor_value_info("waveform", F, ["samples"]), helper.make_tensor_value_info("length", I64, [])],
        [helper.make_tensor_value_info("mel_fusion", F, [1, 4, audio_module.CHUNK_FRAMES, audio_module.MEL_BINS]),
         helper.make_tensor_value_info("longer", TensorProto.BOOL, [1])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bst-rt")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def export_frontend(path: Path) -> Path:
    path = Path(path)
    onnx.save_model(build_frontend(), str(path))
    return path
