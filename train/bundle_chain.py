"""The exported bundle as a development-as-evaluation chain (`bst-train dev-as-eval RUN DATA --bundle DIR`).

Same protocol as `dev_eval.TorchChain`, but the clips go through what ships: decoding, the numpy front end and the
ONNX graphs of `bst_rt.runtime.predict.Predictor`, each item decided alone (`policy.decide_items`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bst_rt.runtime.clip import Clip
from bst_rt.runtime.policy import SystemPolicy
from bst_rt.runtime.predict import Predictor
from bst_rt.runtime.taxonomy import CODE_TO_INDEX

from .dev_eval import SystemOutput


class BundleChain:
    name = "bundle"

    def __init__(self, bundle: Path | str, *, provider: str = "cpu", threads: int | None = None,
                 batch_size: int = 16) -> None:
        self.predictor = Predictor.load(Path(bundle), system=1, provider=provider, threads=threads)
        self.systems = tuple(sorted(int(s) for s in self.predictor.bundle.manifest.systems))
        self.batch_size = batch_size

    @property
    def policies(self) -> list[SystemPolicy]:
        return [self.predictor.with_system(s).policy for s in self.systems]

    def predict(self, clips: Sequence[Clip]) -> dict[int, SystemOutput]:
        preds: dict[int, list] = {s: [] for s in self.systems}
        for start in range(0, len(clips), self.batch_size):
            part = self.predictor.predict_systems(clips[start:start + self.batch_size], self.systems)
            for s in self.systems:
                preds[s] += part[s]
        out = {}
        for s in self.systems:
            final = preds[s]
            out[s] = SystemOutput(np.array([CODE_TO_INDEX[p.label] for p in final], dtype=np.int64),
                                  np.array([p.score for p in final]), np.array([p.overridden for p in final]))
        return out
