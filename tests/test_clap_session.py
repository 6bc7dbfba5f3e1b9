"""make_session's provider handling (incl. silent CUDA fallback) and the runtime tokenizer's padding/truncation."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.session import ProviderError, make_session, session_provider

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, path)
    return path


def test_cpu_session_runs_and_reports_cpu(tiny_graph):
    session = make_session(tiny_graph, "cpu", threads=1)
    out = session.run(None, {"x": np.array([[-1.0, 0.5, 2.0]], np.float32)})[0]
    np.testing.assert_array_equal(out, [[0.0, 0.5, 2.0]])
    assert session_provider(session) == "cpu"


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA")
def test_cuda_without_cuda_build_fails_clearly(tiny_graph):
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        make_session(tiny_graph, "cuda")
    assert session_provider(make_session(tiny_graph, "auto")) == "cpu"


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a GPU")
def test_cuda_really_used_when_available(tiny_graph):
    assert session_provider(make_session(tiny_graph, "cuda")) == "cuda"


@pytest.mark.skipif(HAS_CUDA, reason="fallback is simulated on CPU-only onnxruntime")
def test_silent_cuda_fallback_is_detected(tiny_graph, monkeypatch):
    """onnxruntime listing CUDA but not using it (missing CUDA libraries) is the classic silent fallback."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="fell back to CPU"):
        make_session(tiny_graph, "cuda")
    with pytest.warns(RuntimeWarning, match="fell back to CPU"):
        session = make_session(tiny_graph, "auto")
    assert session_provider(session) == "cpu"


def test_bad_arguments_and_files(tiny_graph, tmp_path):
    with pytest.raises(ProviderError, match="unknown provider"):
        make_session(tiny_graph, "tpu")  # type: ignore[arg-type]
    with pytest.raises(BstError, match="not found"):
        make_session(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(BstError, match="junk.onnx"):
        make_session(junk)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from bst_rt.export.clap import save_tokenizer
    from bst_rt.runtime.tokenizer import Tokenizer
    from bst_rt.train.hf_offline import ensure_cache

    repo = ensure_cache() / "models--roberta-base"
    folder = repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    return Tokenizer.from_file(save_tokenizer(folder, tmp_path_factory.mktemp("tok") / "tokenizer.json"))


def test_tokenizer_pads_to_longest_and_truncates_at_77(tokenizer):
    ids, mask = tokenizer.encode_batch(["a dog", "rain on the roof " * 50, ""])
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (3, 77)
    assert ids[1, 0] == 0 and ids[1, 76] == 2 and mask[1].all()  # <s> ... </s> kept after truncation
    assert ids[2, :2].tolist() == [0, 2] and mask[2].sum() == 2 and tokenizer.pad_id == 1 and (ids[2, 2:] == 1).all()
    short, short_mask = tokenizer.encode_batch(["a dog"])
    assert short.shape[1] == short_mask.sum() < 77
    np.testing.assert_array_equal(short[0], ids[0, :short.shape[1]])


def test_tokenizer_rejects_bad_file(tmp_path):
    from bst_rt.runtime.tokenizer import Tokenizer

    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(BstError, match="tokenizer.json"):
        Tokenizer.from_file(bad)
