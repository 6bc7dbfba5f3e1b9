"""The CLAP graph cache's key: a change to the exported graphs' code must never reuse graphs cached before it."""
from __future__ import annotations

from types import SimpleNamespace

from bst_rt.export import clap, graph_cache

PROV = SimpleNamespace(checkpoint_sha256=None, tokenizer="roberta-base", tokenizer_sha256="ab" * 32)


def test_key_changes_with_the_graphs_version(monkeypatch):
    key = graph_cache.cache_key(PROV, 0)
    # the key before graphs were versioned: folders cached then hold the full-last-layer text graph
    assert key != f"random-seed0-roberta-base-{'ab' * 6}"
    monkeypatch.setattr(clap, "GRAPHS_VERSION", clap.GRAPHS_VERSION + 1)
    assert graph_cache.cache_key(PROV, 0) != key


def test_key_still_tells_weights_and_tokenizers_apart():
    ckpt = SimpleNamespace(checkpoint_sha256="cd" * 32, tokenizer="roberta-base", tokenizer_sha256="ab" * 32)
    other_tok = SimpleNamespace(checkpoint_sha256=None, tokenizer="stand-in-bpe", tokenizer_sha256="ef" * 32)
    keys = {graph_cache.cache_key(PROV, 0), graph_cache.cache_key(PROV, 1), graph_cache.cache_key(ckpt, 0),
            graph_cache.cache_key(other_tok, 0)}
    assert len(keys) == 4
