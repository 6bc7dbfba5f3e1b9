"""Exported CLAP graphs vs their torch source: the branch-free wrapper, batch independence, int8 cosine."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bst_rt.export.clap import (AUDIO_GRAPH, AUDIO_INT8, GRAPH_TOLERANCE, INT8_MIN_COSINE, TEXT_GRAPH, TEXT_INT8,
                             TOKENIZER_FILE, BranchFreeAudio, FullTextGraph, random_mel)
from bst_rt.runtime.int8_format import DEFAULT_INT8_FORMAT
from bst_rt.runtime.session import make_session
from bst_rt.runtime.tokenizer import Tokenizer

pytestmark = pytest.mark.slow

TEXTS = ["a dog barks", "Solo piano. piano classical waltz. A slow waltz in A minor, recorded at home on an upright.",
         "", "rain on the roof " * 40, "Glitchy UI beeps & whooshes: 3 takes (48 kHz)."]


def _laion_audio(model, mel: np.ndarray, longer: np.ndarray) -> np.ndarray:
    """laion-clap's own fusion forward (`CLAP.get_audio_embedding` on its feature dicts)."""
    data = [{"mel_fusion": torch.from_numpy(m), "longer": torch.tensor([bool(lg)])} for m, lg in zip(mel, longer)]
    with torch.no_grad():
        return model.model.get_audio_embedding(data).numpy()


def test_branch_free_wrapper_equals_laion_forward(clap_reference):
    mel, _ = random_mel(3, seed=5)
    wrapper = BranchFreeAudio(clap_reference).eval()
    for longer in (np.array([True, False, True]), np.zeros(3, bool)):
        with torch.no_grad():
            ours = wrapper(torch.from_numpy(mel), torch.from_numpy(longer)).numpy()
        err = float(np.abs(ours - _laion_audio(clap_reference, mel, longer)).max())
        print(f"wrapper vs laion, longer={longer.astype(int).tolist()}: max abs diff {err:.2e}")
        assert err <= 1e-6


def test_audio_graph_matches_torch_at_every_batch_size(clap_reference, clap_graphs):
    session = make_session(clap_graphs / AUDIO_GRAPH)
    wrapper = BranchFreeAudio(clap_reference).eval()
    mel8, longer8 = random_mel(8, seed=7)
    longer8 = np.array([True, False, False, True, True, False, True, False])
    with torch.no_grad():  # torch in eval mode is per-item, so one B=8 reference serves every sub-batch
        ref8 = wrapper(torch.from_numpy(mel8), torch.from_numpy(longer8)).numpy()
    per_item = {}
    for batch, idx in ((1, [0]), (1, [1]), (3, [0, 1, 2]), (8, list(range(8))), (3, [1, 2, 5])):
        mel, longer = mel8[idx], longer8[idx]
        ort = session.run(None, {"mel_fusion": mel, "longer": longer})[0]
        err = float(np.abs(ort - ref8[idx]).max())
        print(f"audio graph B={batch} longer={longer.astype(int).tolist()}: max abs diff ORT vs torch {err:.2e}")
        assert ort.shape == (batch, 512) and err <= GRAPH_TOLERANCE
        for i, row in zip(idx, ort):
            per_item.setdefault(i, []).append(row)
    spread = max(float(np.abs(np.stack(rows) - rows[0]).max()) for rows in per_item.values())
    print(f"audio graph: same item across batch sizes, max diff {spread:.2e}")
    assert spread <= GRAPH_TOLERANCE  # the frozen-batch window_reverse trap shows up here (1e-3 or worse)


def test_text_graph_matches_torch_and_ignores_padding(clap_reference, clap_graphs):
    tok = Tokenizer.from_file(clap_graphs / TOKENIZER_FILE)
    session = make_session(clap_graphs / TEXT_GRAPH)
    ids, mask = tok.encode_batch(TEXTS)
    ort = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        ref = FullTextGraph(clap_reference).eval()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    err = float(np.abs(ort - ref).max())
    singles = np.concatenate([session.run(None, dict(zip(("input_ids", "attention_mask"), tok.encode_batch([t]))))[0]
                              for t in TEXTS])
    pad_err = float(np.abs(singles - ort).max())
    print(f"text graph: max abs diff ORT vs torch {err:.2e}; alone vs padded in batch {pad_err:.2e}")
    assert ids.shape[1] == 77 and err <= GRAPH_TOLERANCE and pad_err <= GRAPH_TOLERANCE


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_int8_graphs_keep_cosine_to_fp32(clap_graphs):
    mel, longer = random_mel(6, seed=11)
    a32 = make_session(clap_graphs / AUDIO_GRAPH).run(None, {"mel_fusion": mel, "longer": longer})[0]
    a8 = make_session(clap_graphs / AUDIO_INT8).run(None, {"mel_fusion": mel, "longer": longer})[0]
    ids, mask = Tokenizer.from_file(clap_graphs / TOKENIZER_FILE).encode_batch(TEXTS)
    feeds = {"input_ids": ids, "attention_mask": mask}
    t32 = make_session(clap_graphs / TEXT_GRAPH).run(None, feeds)[0]
    t8 = make_session(clap_graphs / TEXT_INT8).run(None, feeds)[0]
    ca, ct = _cos(a8, a32).min(), _cos(t8, t32).min()
    print(f"int8 vs fp32 min cosine: audio (per-channel) {ca:.5f}, text {ct:.5f}")
    sizes = {p.name: p.stat().st_size for p in clap_graphs.glob("*.onnx")}
    assert sizes[AUDIO_INT8] < sizes[AUDIO_GRAPH] / 2 and sizes[TEXT_INT8] < sizes[TEXT_GRAPH] / 2
    assert ca >= INT8_MIN_COSINE and ct >= INT8_MIN_COSINE


def test_parity_record_is_written(clap_graphs):
    record = json.loads((clap_graphs / "clap_parity.json").read_text())
    assert record["audio_fp32_max_abs_diff"] <= GRAPH_TOLERANCE and record["text_fp32_max_abs_diff"] <= GRAPH_TOLERANCE
    assert record["audio_int8_min_cosine"] >= INT8_MIN_COSINE and record["text_int8_min_cosine"] >= INT8_MIN_COSINE
    assert record["int8_format"] == DEFAULT_INT8_FORMAT
    assert record["provenance"]["chunk_rule"] == "centre-of-thirds"
    assert record["provenance"]["tokenizer"] == "stand-in-bpe" and record["provenance"]["weights"] == "random"
