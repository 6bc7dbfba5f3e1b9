"""The int8 weight format (issue 24): recorded in the manifest, refused in one line where it cannot run exactly,
never rewritten by onnxruntime at load, and the reason for the choice measured on a real quantised MatMul.

The saturation test quantises one MatMul with onnxruntime's `quantize_dynamic` in each format and runs it on this
CPU: on an x86 CPU without VNNI/AMX (the 2-core AVX2 EPYC this was written on) full-range int8 weights lose
accuracy to the 16-bit pair-sum clamp and 7-bit ones do not; where VNNI/AMX exist (or off x86) both are exact.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bst_rt.runtime.errors import BundleError
from bst_rt.runtime.int8_format import (DEFAULT_INT8_FORMAT, INT8_FORMATS, LEGACY_INT8_FORMAT, check_int8_format,
                                        u8s8_saturates)

AVX2 = frozenset({"sse4_1", "avx", "avx2", "fma"})
VNNI = AVX2 | {"avx512f", "avx512_vnni"}


def test_formats_that_cannot_saturate_run_everywhere():
    for name in ("uint8-per-channel", "int8-7bit-per-tensor", "int8-7bit-per-channel"):
        for flags, machine in ((AVX2, "x86_64"), (VNNI, "x86_64"), (None, "x86_64"), (None, "aarch64")):
            assert check_int8_format(name, "m", flags=flags, machine=machine).name == name
    assert not INT8_FORMATS[DEFAULT_INT8_FORMAT].can_saturate and not INT8_FORMATS[LEGACY_INT8_FORMAT].can_saturate


@pytest.mark.parametrize("flags, machine, refused", [
    (AVX2, "x86_64", "has no VNNI/AMX"), ("unreadable", "x86_64", "cannot be checked"),
    (VNNI, "x86_64", None), (AVX2 | {"avx_vnni"}, "x86_64", None), (AVX2 | {"amx_int8"}, "AMD64", None),
    (None, "aarch64", None), (None, "arm64", None),
])
def test_full_range_int8_is_refused_only_where_it_saturates(flags, machine, refused, monkeypatch):
    if flags == "unreadable":  # /proc/cpuinfo missing (not Linux): x86 without known flags is not trusted
        monkeypatch.setattr("bst_rt.runtime.int8_format.cpu_flags", lambda: None)
        flags = None
    if refused is None:
        assert check_int8_format("int8-per-channel", "m", flags=flags, machine=machine).can_saturate
        return
    with pytest.raises(BundleError) as err:
        check_int8_format("int8-per-channel", "bundle/manifest.json: graphs.x", flags=flags, machine=machine)
    msg = str(err.value)
    assert "\n" not in msg and refused in msg and "int8-7bit-per-channel" in msg and msg.startswith("bundle/")


def test_an_unknown_format_is_refused_in_one_line():
    with pytest.raises(BundleError) as err:
        check_int8_format("int4-magic", "m.json: graphs.audio_encoder_int8", flags=VNNI, machine="x86_64")
    assert "\n" not in str(err.value) and "'int4-magic' is unknown" in str(err.value)


def test_sessions_never_rewrite_int8_weights_at_load(tmp_path):
    """onnxruntime's x64 'precision mode' would turn int8 weights into uint8 ones at load: another format than the
    manifest records. make_session pins it off."""
    from onnx import TensorProto, helper

    from bst_rt.runtime.session import X64_QUANT_PRECISION, make_session

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "relu.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    opts = make_session(path, "cpu", threads=1).get_session_options()
    assert opts.get_session_config_entry(X64_QUANT_PRECISION) == "0"


def _matmul_error(tmp_path, fmt: str) -> float:
    """Max |int8 - fp32| / max |fp32| of one quantised MatMul [64, 768] x [768, 768] on this CPU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bst_rt.export.clap import quantize_int8
    from bst_rt.runtime.session import make_session

    rng = np.random.default_rng(0)
    # weights near their channel's maximum and activations near the top of their range: pairs of products of one
    # sign, the case the 16-bit pair sums clip (gaussian weights rarely put two large ones side by side)
    w = (rng.choice([-1.0, 1.0], (768, 768)) * rng.uniform(0.7, 1.0, (768, 768))).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 768])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 768])],
                          [numpy_helper.from_array(w, "w")])
    src, dst = tmp_path / "mm.onnx", tmp_path / f"mm.{fmt}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    quantize_int8(src, dst, fmt)
    x = rng.uniform(3.0, 4.0, (64, 768)).astype(np.float32)
    ref = x @ w
    out = make_session(dst, "cpu", threads=1).run(None, {"x": x})[0]
    return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


def test_seven_bit_weights_do_not_saturate_and_full_range_does_only_without_vnni(tmp_path):
    errors = {fmt: _matmul_error(tmp_path, fmt) for fmt in ("uint8-per-channel", "int8-7bit-per-channel",
                                                          "int8-per-channel")}
    print("quantised MatMul, max error / max |fp32| on this CPU:", {k: f"{v:.4f}" for k, v in errors.items()},
          "U8S8 saturates here:", u8s8_saturates())
    # 7-bit weights: quantisation error only (on the AVX2 EPYC: 0.006, full-range int8 0.36 from the clamp)
    assert errors["int8-7bit-per-channel"] < 0.05 and errors["uint8-per-channel"] < 0.05
    if u8s8_saturates():
        assert errors["int8-per-channel"] > 3 * errors["int8-7bit-per-channel"], "expected the 16-bit clamp here"
    else:
        assert errors["int8-per-channel"] < 0.05


def test_a_bundle_refuses_its_int8_graphs_when_their_format_is_unsafe_here(bundle):
    """The session bundle's int8 graphs carry the shipped format; edited to an unknown one, asking for them is one
    BundleError; the fp32 graphs of the same bundle stay usable."""
    from bst_rt.runtime.bundle import Bundle, load_bundle

    b = load_bundle(bundle)
    spec = b.manifest.graphs["audio_encoder_int8"]
    assert spec.int8_format == DEFAULT_INT8_FORMAT and b.graph("audio_encoder", int8=True) is spec
    edited = dataclasses.replace(b.manifest, graphs={**b.manifest.graphs,
                                                     "audio_encoder_int8": dataclasses.replace(spec, int8_format="int4")})
    other = Bundle(b.root, edited)
    with pytest.raises(BundleError, match="int8 format 'int4' is unknown"):
        other.graph("audio_encoder", int8=True)
    assert other.graph("audio_encoder").precision == "fp32"
    legacy = dataclasses.replace(spec, int8_format="")  # a manifest before 1.3: its exporter wrote uint8 weights
    assert Bundle.int8_format(legacy) == LEGACY_INT8_FORMAT


def test_requantize_bundle_writes_a_verified_copy_in_another_format(bundle, tmp_path):
    """The bench's format table runs each format through the runtime via `requantize_bundle`: a verified bundle whose
    int8 graphs are new files in the asked format, every other file shared, cosines measured again."""
    from bst_rt.export.bundle import requantize_bundle
    from bst_rt.runtime.bundle import load_bundle

    out = tmp_path / "uint8"
    requantize_bundle(bundle, out, "uint8-per-channel", log=lambda _: None)
    src, b = load_bundle(bundle), load_bundle(out)  # verifies every size and sha256
    for name in ("audio_encoder_int8", "text_encoder_int8"):
        spec = b.manifest.graphs[name]
        assert spec.int8_format == "uint8-per-channel" and spec.sha256 != src.manifest.graphs[name].sha256
        assert spec.parity["cosine_min"] >= spec.parity["cosine_required"]
        print(f"{name}: uint8-per-channel min cosine {spec.parity['cosine_min']:.5f}, shipped "
              f"{src.manifest.graphs[name].int8_format} {src.manifest.graphs[name].parity['cosine_min']:.5f}")
    assert b.manifest.graphs["heads"] == src.manifest.graphs["heads"]
    assert b.manifest.bundle_id != src.manifest.bundle_id  # a journal of the source run must not resume on it
