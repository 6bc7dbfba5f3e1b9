"""`load_clap(ckpt)`: a laion-style checkpoint (DDP `module.` prefix, `state_dict` key, the stale position_ids
entry) loads into the offline-built model and reproduces the model it was saved from."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bst_rt.runtime.errors import BstError
from bst_rt.train.clap import load_clap, reference_text_embedding

pytestmark = pytest.mark.slow


def test_checkpoint_round_trip(clap_reference, tmp_path):
    state = {f"module.{k}": v for k, v in clap_reference.model.state_dict().items()}
    state.setdefault("module.text_branch.embeddings.position_ids", torch.arange(514)[None])
    ckpt = tmp_path / "630k-audioset-fusion-best.pt"
    torch.save({"epoch": 45, "state_dict": state}, ckpt)
    del state
    loaded = load_clap(ckpt)
    assert loaded.bst_provenance.weights == "checkpoint" and len(loaded.bst_provenance.checkpoint_sha256) == 64
    texts = ["a dog barks", "rain on a tin roof"]
    err = float(np.abs(reference_text_embedding(loaded, texts) - reference_text_embedding(clap_reference, texts)).max())
    print(f"checkpoint round trip, text embedding max abs diff {err:.1e}")
    assert err == 0.0
    for a, b in zip(loaded.model.audio_branch.bn0.parameters(), clap_reference.model.audio_branch.bn0.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(loaded.model.audio_branch.bn0.running_var, clap_reference.model.audio_branch.bn0.running_var)


def test_wrong_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"state_dict": {"module.encoder.weight": torch.zeros(3)}}, bad)
    with pytest.raises(BstError, match="not a CLAP fusion checkpoint"):
        load_clap(bad)
    with pytest.raises(BstError, match="exactly one"):
        load_clap(None)
    with pytest.raises(BstError, match="not found"):
        load_clap(tmp_path / "absent.pt")


def test_offline_model_is_the_full_size_architecture(clap_reference):
    import os

    import huggingface_hub.constants as hub_constants

    cfg = clap_reference.model.text_branch.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (50265, 768, 12, 12)
    assert (cfg.intermediate_size, cfg.max_position_embeddings, cfg.pad_token_id) == (3072, 514, 1)
    n_params = sum(p.numel() for p in clap_reference.parameters())
    print(f"CLAP fusion parameters: {n_params / 1e6:.1f} M")
    assert n_params > 150e6
    assert hub_constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1" and "hf-offline" in hub_constants.HF_HUB_CACHE
    tok = clap_reference.tokenize
    assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
