"""Names shared by training, export and the runtime, defined once: the embedding width, the `features/` folder of a
dataset and its file names, and the input/output names of the heads and ranker graphs.

A dataset's embeddings live in `ROOT/features/clap_<kind>_embeddings/<clip id>.npy` (kind: audio, text,
text_masked) with `ROOT/features/clap_class_text_embeddings.npy` [23, 512] beside them (`bst-train embed` and
`bst-train synth` write them; training, ranking and `bst-rt evaluate` read them). A bundle ships the class table
under its own name, recorded in the manifest (`class_text_embeddings_file`) and read from there.
"""
from __future__ import annotations

from pathlib import Path

#: width of every CLAP embedding (audio, text, masked text) and of the heads' inputs
EMBEDDING_DIM = 512

FEATURES_DIR = "features"
EMBEDDING_KINDS = ("audio", "text", "text_masked")
#: embedding kind -> its folder under `features/`
EMBEDDING_DIRS = {kind: f"clap_{kind}_embeddings" for kind in EMBEDDING_KINDS}
#: [23, 512] class-description embeddings under `features/`
CLASS_TEXT_FILE = "clap_class_text_embeddings.npy"
#: the same table's file name inside a bundle (recorded in the manifest, which the runtime reads it from)
BUNDLE_CLASS_TEXT_FILE = "class_text_embeddings.npy"

#: heads.onnx: one [batch, EMBEDDING_DIM] input per embedding (the masked one only when a family reads it) ...
HEADS_INPUTS = ("audio_embedding", "text_embedding", "masked_text_embedding")
AUDIO_INPUT, TEXT_INPUT, MASKED_INPUT = HEADS_INPUTS
#: ... and [batch, F, 23] family and [batch, P, 23] pool distributions out
HEADS_OUTPUTS = ("family_probs", "pool_probs")
FAMILY_PROBS, POOL_PROBS = HEADS_OUTPUTS

#: ranker.onnx: [C, n_features] float32 candidate rows in, labels and [C, 2] probabilities out
RANKER_INPUT = "candidate_features"
RANKER_OUTPUTS = ("label", "probabilities")
RANKER_PROBABILITIES = "probabilities"


def features_dir(root: Path | str) -> Path:
    return Path(root) / FEATURES_DIR


def embedding_dir(root: Path | str, kind: str) -> Path:
    """`ROOT/features/clap_<kind>_embeddings` (kind checked by the caller)."""
    return features_dir(root) / EMBEDDING_DIRS[kind]


def class_text_path(root: Path | str) -> Path:
    return features_dir(root) / CLASS_TEXT_FILE

#: the portable contract's version (manifest `portable.contract`; bst_rt.runtime.portable, docs/portable.md).
#: v2: the caller hands samples at their own rate to the `resample` graph (v1 asked it to reproduce soxr)
PORTABLE_CONTRACT = "bst-portable-v2"
