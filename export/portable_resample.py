"""The portable resampler as one ONNX graph: mono samples at their own rate -> 48 kHz (`bst_rt.runtime.resample`).

    waveform f32 [samples], sample_rate i64 [] -> waveform_48k f32 [ceil(samples * 48000 / sample_rate)]

At 48 kHz an `If` passes the samples through untouched. Otherwise the graph takes the design rate (the rate, or its
nearest multiple of 50 Hz where the exact table would be too large: `bst_rt.runtime.resample.design_rate`), builds the design's [L, W] phase
table from the rate (loop-free gcd over 48000's prime powers, Kaiser window by its I0 series, float64) and
filters as the numpy twin does: the zero-padded waveform cut into rows of M samples, a `Loop` over the W / M
blocks adding [rows, M] x [M, L] MatMuls in float64, one rounding to float32 at the end (ONNX Conv would need its
stride, the rate-dependent M, as a build-time attribute, and runs in float32 only).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from bst_rt.runtime import resample as design

from .portable_frontend import OPSET, _G

INPUTS = ("waveform", "sample_rate")
OUTPUT = "waveform_48k"
D, F, I64 = TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.INT64


def _i0(g: _G, x: str) -> str:
    q = g.op("Mul", g.op("Div", x, g.const(2.0, np.float64)), g.op("Div", x, g.const(2.0, np.float64)))
    term, total = g.const(1.0, np.float64), g.const(1.0, np.float64)
    for k in range(1, design.I0_TERMS):
        term = g.op("Div", g.op("Mul", term, q), g.const(float(k * k), np.float64))
        total = g.op("Add", total, term)
    return total


def _shape(g: _G, c, sr: str) -> tuple[str, str, str, str, str, str]:
    """(L, M, ratio, scale, half, W) of `bst_rt.runtime.resample._exact_shape` for the rate tensor `sr`."""
    gcd = c(1)
    for p, k in design.GCD_FACTORS:
        for e in range(1, k + 1):
            hit = g.op("Equal", g.op("Mod", sr, c(p ** e)), c(0))
            gcd = g.op("Mul", gcd, g.op("Where", hit, c(p), c(1)))
    up = g.op("Div", c(design.TARGET_RATE_HZ), gcd)
    down = g.op("Div", sr, gcd)
    k = g.op("Max", c(1), g.op("Div", g.op("Sub", g.op("Add", c(design.MIN_HOP), down), c(1)), down))  # MIN_HOP
    up, down = g.op("Mul", up, k), g.op("Mul", down, k)
    ratio = g.op("Div", c(float(design.TARGET_RATE_HZ), np.float64), g.op("Cast", sr, to=D))
    scale = g.op("Min", ratio, c(1.0, np.float64))
    half = g.op("Div", c(float(design.HALF_WIDTH), np.float64), scale)
    pad = g.op("Cast", g.op("Ceil", half), to=I64)
    support = g.op("Add", g.op("Div", g.op("Mul", g.op("Sub", up, c(1)), down), up), g.op("Add", g.op("Mul", pad, c(2)), c(2)))
    width = g.op("Mul", g.op("Div", g.op("Sub", g.op("Add", support, down), c(1)), down), down)  # whole hops
    return up, down, ratio, scale, half, width


def _resample_branch() -> onnx.GraphProto:
    """The else branch: the polyphase filter for a rate other than 48 kHz (reads the outer `waveform`, `sample_rate`)."""
    g = _G()
    c = lambda v, dt=np.int64: g.const(v, dt)  # noqa: E731
    up, _, _, _, _, width = _shape(g, c, "sample_rate")
    # design_rate: the nearest multiple of FALLBACK_STEP_HZ where the exact table would be too large
    step = design.FALLBACK_STEP_HZ
    rounded = g.op("Mul", g.op("Div", g.op("Add", "sample_rate", c(step // 2)), c(step)), c(step))
    huge = g.op("Greater", g.op("Mul", up, width), c(design.MAX_TABLE))
    sr = g.op("Where", huge, rounded, "sample_rate")
    up, down, ratio, scale, half, width = _shape(g, c, sr)
    pad = g.op("Cast", g.op("Ceil", half), to=I64)
    blocks = g.op("Div", g.op("Sub", g.op("Add", width, down), c(1)), down)  # ceil(W / M) kernel rows
    taps = g.op("Mul", blocks, down)
    # the phase table, [L, blocks * M] (columns from W on are zero: |t| >= half there)
    p = g.op("Unsqueeze", g.op("Range", c(0), up, c(1)), c([1]))
    pm = g.op("Mul", p, down)
    off = g.op("Div", pm, up)
    frac = g.op("Div", g.op("Cast", g.op("Mod", pm, up), to=D), g.op("Cast", up, to=D))
    u = g.op("Unsqueeze", g.op("Range", c(0), taps, c(1)), c([0]))
    d = g.op("Sub", g.op("Sub", u, off), pad)
    t = g.op("Sub", frac, g.op("Cast", d, to=D))
    at = g.op("Abs", t)
    r = g.op("Min", g.op("Div", at, half), c(1.0, np.float64))
    arg_w = g.op("Mul", c(design.KAISER_BETA, np.float64), g.op("Sqrt", g.op("Sub", c(1.0, np.float64), g.op("Mul", r, r))))
    i0_beta = float(design._i0(np.float64(design.KAISER_BETA)))
    window = g.op("Div", _i0(g, arg_w), c(i0_beta, np.float64))
    two_fc = g.op("Mul", c(2.0 * design.CUTOFF * 0.5, np.float64), scale)
    arg = g.op("Mul", two_fc, t)
    zero = g.op("Equal", arg, c(0.0, np.float64))
    pi_arg = g.op("Mul", c(np.pi, np.float64), arg)
    sinc = g.op("Where", zero, c(1.0, np.float64),
                g.op("Div", g.op("Sin", pi_arg), g.op("Where", zero, c(1.0, np.float64), pi_arg)))
    h = g.op("Where", g.op("Less", at, half), g.op("Mul", g.op("Mul", two_fc, sinc), window), c(0.0, np.float64))
    taps3 = g.op("Transpose", g.op("Reshape", h, g.op("Concat", g.op("Reshape", up, c([1])), g.op("Reshape", blocks, c([1])),
                                                      g.op("Reshape", down, c([1])), axis=0)), perm=[1, 2, 0])  # [B, M, L]
    # the waveform, zero-padded and cut into rows of M samples
    n = g.op("Shape", "waveform")
    n_out = g.op("Cast", g.op("Ceil", g.op("Mul", g.op("Cast", n, to=D), ratio)), to=I64)  # [1]
    nq = g.op("Div", g.op("Sub", g.op("Add", n_out, up), c(1)), up)
    rows = g.op("Add", nq, g.op("Sub", blocks, c(1)))
    right = g.op("Sub", g.op("Sub", g.op("Mul", rows, down), g.op("Reshape", pad, c([1]))), n)
    right = g.op("Max", right, c([0]))
    xpad = g.op("Pad", "waveform", g.op("Concat", g.op("Reshape", pad, c([1])), right, axis=0), c(0.0, np.float32),
                mode="constant")
    xpad = g.op("Slice", xpad, c([0]), g.op("Mul", rows, down), c([0]))
    grid = g.op("Cast", g.op("Reshape", xpad, g.op("Concat", rows, g.op("Reshape", down, c([1])), axis=0)), to=D)
    acc0 = g.op("ConstantOfShape", g.op("Concat", nq, g.op("Reshape", up, c([1])), axis=0),
                value=helper.make_tensor("zero", D, [1], [0.0]))
    # body: acc += grid[b : b + nq] @ taps3[b]
    body = _G()
    body._n = 1_000_000  # names unique across the scopes (a subgraph may not shadow an outer name)
    start = body.op("Unsqueeze", "b", body.const([0], np.int64))
    block = body.op("Slice", grid, start, body.op("Add", start, nq), body.const([0], np.int64))
    tap = body.op("Gather", taps3, "b", axis=0)
    body.op("Identity", "cond_in", name="cond_out")
    body.op("Add", "acc_in", body.op("MatMul", block, tap), name="acc_out")
    body_graph = helper.make_graph(
        body.nodes, "block_product",
        [helper.make_tensor_value_info("b", I64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", D, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, None), helper.make_tensor_value_info("acc_out", D, None)],
        body.inits)
    acc = g.op("Loop", blocks, c(True, np.bool_), acc0, body=body_graph)
    flat = g.op("Cast", g.op("Reshape", acc, c([-1])), to=F)
    g.op("Slice", flat, c([0]), n_out, c([0]), name="resampled")
    return helper.make_graph(g.nodes, "resample", [], [helper.make_tensor_value_info("resampled", F, None)], g.inits)


def build_resample() -> onnx.ModelProto:
    g = _G()
    g._n = 2_000_000
    is48 = g.op("Equal", "sample_rate", g.const(design.TARGET_RATE_HZ, np.int64))
    ident = helper.make_graph([helper.make_node("Identity", ["waveform"], ["same"])], "passthrough", [],
                              [helper.make_tensor_value_info("same", F, None)])
    g.nodes.append(helper.make_node("If", [is48], [OUTPUT], then_branch=ident, else_branch=_resample_branch()))
    graph = helper.make_graph(
        g.nodes, "bst_portable_resample",
        [helper.make_tensor_value_info("waveform", F, ["samples"]), helper.make_tensor_value_info("sample_rate", I64, [])],
        [helper.make_tensor_value_info(OUTPUT, F, ["samples_48k"])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bst-rt")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def export_resample(path: Path) -> Path:
    path = Path(path)
    onnx.save_model(build_resample(), str(path))
    return path
