"""The exported text graph computes its last RoBERTa layer for token 0 only (the one the pooler reads): its
embeddings against laion-clap's full text path (every layer on every token), on real roberta-base token ids.

Tolerances, on the normalised 512-d embedding: 1e-6 max abs diff for the torch module and for the ORT graph
(both only reorder float sums; seeded random weights, measured about 1e-7)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bst_rt.export.clap import TEXT_GRAPH, FullTextGraph, TextGraph, save_tokenizer
from bst_rt.runtime.session import make_session
from bst_rt.runtime.tokenizer import Tokenizer

ROBERTA = next((p for p in (Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "roberta-base",
                            Path("/work/shared/reference/roberta-base")) if (p / "vocab.json").is_file()), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(ROBERTA is None, reason="the real roberta-base files are not in ../shared/reference")]

TOLERANCE = 1e-6
TEXTS = ["Rain", "Dog barking.", "Kick 01. drum kick one-shot 808.",
         "Solo piano. piano classical waltz. A slow waltz in A minor recorded on an upright piano at home.",
         "City street. urban traffic people. Busy crossing with buses, footsteps and chatter, a siren far away.",
         "Glitchy UI beeps & whooshes: 3 takes (48 kHz), mono, normalised to -1 dBFS; see the notes for each take.",
         "Field recording. forest birds wind. " * 12]


@pytest.fixture(scope="module")
def roberta_ids(tmp_path_factory) -> tuple[list[list[int]], Tokenizer]:
    tok = Tokenizer.from_file(save_tokenizer(ROBERTA, tmp_path_factory.mktemp("tok") / "tokenizer.json"))
    ids = tok.token_ids(TEXTS)
    lengths = [len(t) for t in ids]
    print(f"token counts: {lengths}")
    assert min(lengths) == 3 and max(lengths) == 77 and len(set(lengths)) == len(lengths)
    return ids, tok


def _laion(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """laion-clap's own text path: `CLAP.get_text_embedding` (RobertaModel pooler_output -> projection)."""
    with torch.no_grad():
        return model.model.get_text_embedding({"input_ids": torch.from_numpy(ids),
                                               "attention_mask": torch.from_numpy(mask)}).numpy()


def test_torch_module_equals_laion_and_runs_last_layer_on_token0(clap_reference, roberta_ids, torch_one_thread):
    token_ids, tok = roberta_ids
    ids, mask = tok.pad(token_ids)
    seen: dict[str, tuple[int, ...]] = {}
    last = clap_reference.model.text_branch.encoder.layer[-1].intermediate
    handle = last.register_forward_hook(lambda _m, args, _out: seen.__setitem__("ffn_input", tuple(args[0].shape)))
    try:
        with torch.no_grad():
            ours = TextGraph(clap_reference).eval()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        token0_shape = seen["ffn_input"]
        with torch.no_grad():
            FullTextGraph(clap_reference).eval()(torch.from_numpy(ids), torch.from_numpy(mask))
        full_shape = seen["ffn_input"]
    finally:
        handle.remove()
    err = float(np.abs(ours - _laion(clap_reference, ids, mask)).max())
    print(f"TextGraph (torch) vs laion, padded batch {ids.shape}: max abs diff {err:.2e} (tolerance {TOLERANCE:g}); "
          f"last-layer FFN input {token0_shape} vs laion's {full_shape}")
    assert token0_shape == (len(TEXTS), 1, 768) and full_shape == (len(TEXTS), ids.shape[1], 768)
    assert err <= TOLERANCE


def test_exported_graph_equals_laion_padded_and_alone(clap_reference, clap_graphs, roberta_ids, torch_one_thread):
    token_ids, tok = roberta_ids
    session = make_session(clap_graphs / TEXT_GRAPH, threads=1)
    errors = {}
    # padded batches: all texts together, the short ones with the longest, and each text on its own
    for name, idx in (("all", list(range(len(TEXTS)))), ("short+longest", [0, 1, 2, 6]), ("mid", [3, 4, 5])):
        ids, mask = tok.pad([token_ids[i] for i in idx])
        ort = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        errors[f"{name} {ids.shape}"] = float(np.abs(ort - _laion(clap_reference, ids, mask)).max())
    for i, t in enumerate(token_ids):
        ids, mask = tok.pad([t])
        ort = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        errors[f"alone {len(t)} tokens"] = float(np.abs(ort - _laion(clap_reference, ids, mask)).max())
    for name, err in errors.items():
        print(f"clap_text.onnx vs laion, {name}: max abs diff {err:.2e}")
    print(f"worst {max(errors.values()):.2e} (tolerance {TOLERANCE:g})")
    assert max(errors.values()) <= TOLERANCE
