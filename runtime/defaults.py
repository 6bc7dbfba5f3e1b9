"""Defaults the Python API and the `bst-rt` commands share, defined once (a light module: the CLI imports it to
build its options without loading onnxruntime or the audio stack)."""
from __future__ import annotations

#: clips per encoder call: `Predictor.predict_clips`, `bst-rt predict/classify --batch-size`, `predict_dataset`.
#: Peak memory grows with it (two batches of mels are alive at once, 4 MB per clip); results never depend on it.
DEFAULT_BATCH_SIZE = 4
