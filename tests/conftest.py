"""Shared, session-scoped fixtures. Each part of the project adds its own here; keep them lazy and cached."""
from __future__ import annotations

import os

# laion-clap/transformers must never reach a hub, in tests or anywhere else.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402,F401


# --- CLAP (issue 3): full-size fusion model at seeded random weights, and its exported graphs, built once ----------
@pytest.fixture(scope="session")
def clap_reference():
    """laion-clap `CLAP_Module(enable_fusion=True)`, offline, random weights at seed 0 (BN statistics too)."""
    import warnings

    from bst.train.clap import load_clap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the loud random-weights warning, expected here
        return load_clap(None, random_weights=True, seed=0)


@pytest.fixture(scope="session")
def clap_graphs(clap_reference, tmp_path_factory):
    """Dir with clap_audio.onnx, clap_text.onnx, their .int8.onnx, tokenizer.json and clap_parity.json."""
    from bst.export.clap import export_clap

    out = tmp_path_factory.mktemp("clap_graphs")
    export_clap(clap_reference, out)
    return out
