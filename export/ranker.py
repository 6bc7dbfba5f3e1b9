"""The candidate ranker as ONNX: skl2onnx, float32 input, no ZipMap, so the runtime reads a plain [C,2] array."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bst_rt.runtime.atomic import atomic_write_bytes
from bst_rt.runtime.layout import RANKER_INPUT as INPUT_NAME
from bst_rt.runtime.layout import RANKER_OUTPUTS as OUTPUT_NAMES

if TYPE_CHECKING:
    import onnx
    from sklearn.ensemble import HistGradientBoostingClassifier

OPSET = 17


def export_ranker(estimator: HistGradientBoostingClassifier, n_features: int, path: Path) -> Path:
    """Convert a fitted sklearn classifier; float64 input is avoided (tree graphs then do not load in ORT)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(estimator): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
        final_types=None,
    )
    names = [o.name for o in onx.graph.output]
    for old, new in zip(names, OUTPUT_NAMES):
        _rename_output(onx, old, new)
    atomic_write_bytes(path, onx.SerializeToString())
    return Path(path)


def _rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    """Stable output names across sklearn estimators (skl2onnx calls them output_label/output_probability)."""
    if old == new:
        return
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for out in model.graph.output:
        if out.name == old:
            out.name = new


def sklearn_ranker(estimator: HistGradientBoostingClassifier, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The source the graph is validated against: labels and class probabilities on float32 rows."""
    x = np.asarray(features, dtype=np.float32)
    return estimator.predict(x), estimator.predict_proba(x)
