"""bst_rt.runtime: the torch-free core. Public API: `Predictor`, `Prediction`, `load_bundle` (imported lazily, so
`bst-rt --help` and the light modules do not pay for onnxruntime and the audio stack)."""
from __future__ import annotations

__all__ = ["Predictor", "Prediction", "load_bundle"]


def __getattr__(name: str):
    if name in ("Predictor", "Prediction"):
        from . import predict

        return getattr(predict, name)
    if name == "load_bundle":
        from .bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'bst_rt.runtime' has no attribute {name!r}")
