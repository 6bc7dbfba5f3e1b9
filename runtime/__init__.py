"""bst_rt.runtime: the torch-free core, and the Python API an application imports (README, "Python API").

    from bst_rt.runtime import Predictor
    with Predictor.load("bundle/", system=1) as predictor:
        p = predictor.predict_file("dog.wav", title="Dog", tags="dog bark")
        print(p.label, p.label_name, p.score, p.top_k)

- `Predictor`: `load(bundle, system, providers, threads, int8)`, `predict_file`, `predict_waveform`,
  `predict_clips` (streaming), `predict_batch`, `embed_audio`, `embed_text`, `providers`, `close()`.
- `Prediction` (label, label_name, score, parent, parent_name, top_k of `RankedClass`, probabilities, fallback),
  `Clip` (id, title, tags, description, audio_path; text fields default to "").
- The class table: `CLASSES` (`BstClass`: index, code, name, description, parent), `CODES`, `PARENT_NAMES`.
- `DEFAULT_BATCH_SIZE` (shared with `bst-rt --batch-size`), `load_bundle`, and the errors (`BstError` and its
  `AudioError`, `BundleError`, `ProviderError`): every failure the library reports is a BstError with one line.

Names are imported lazily, so `bst-rt --help` and the light modules do not pay for onnxruntime and the audio stack.
"""
from __future__ import annotations

import importlib

#: public name -> the module that defines it
_EXPORTS = {
    "Predictor": "predict", "Prediction": "predict", "RankedClass": "predict",
    "Clip": "clip",
    "load_bundle": "bundle",
    "CLASSES": "taxonomy", "CODES": "taxonomy", "PARENT_NAMES": "taxonomy", "BstClass": "taxonomy",
    "DEFAULT_BATCH_SIZE": "defaults",
    "BstError": "errors", "AudioError": "errors", "BundleError": "errors", "ProviderError": "session",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'bst_rt.runtime' has no attribute {name!r}")
