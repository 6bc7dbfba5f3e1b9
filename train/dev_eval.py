"""Development-as-evaluation (docs/method.md, "Development as evaluation"): the development set goes through the
frozen chain label-blind, and labels are read only once every prediction exists.

The chain is anything with `predict(clips) -> {system_id: SystemOutput}`; it receives clips whose `label` is None
(`label_free`). `TorchChain` is the training-side chain (fold checkpoints -> calibrated family probabilities ->
pools (eq. 2, `policy.ensemble_probs`) -> `policy.decide_items` with the sklearn ranker); the exported bundle's chain
plugs in the same way. Note: the fold models saw 4/5 of the development set in training, so these figures are
optimistic: this all-folds run is the deployment check. The estimate is the fold-respecting protocol
(`fold_chains.py`), where each clip goes through the chain frozen from its own fold, next to the nested estimate.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from bst_rt.runtime.clip import Clip
from bst_rt.runtime.datasets import DevDataset, read_dev_dataset
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.candidate_features import FEATURE_NAMES
from bst_rt.runtime.metrics import evaluate_predictions
from bst_rt.runtime.policy import SystemPolicy, decide_items, ensemble_probs

from .ranker import ranker_scores
from .models import family_probs
from .run import RANKER_DIR, RANKER_JSON, load_fold_models, load_run, read_json
from .systems import class_text_embeddings, load_ranker, load_systems

TABLE3_COLUMNS = ("hF", "accuracy", "parent_accuracy", "cross_parent_error")
#: what a chain without a `protocol` attribute is: all five fold models on every clip (the deployment check)
ALL_FOLDS = "all-folds deployment check"


@dataclass(frozen=True)
class SystemOutput:
    """One system's predictions in clip order: label indices, scores in [0, 1], overridden flags."""

    labels: np.ndarray
    scores: np.ndarray
    overridden: np.ndarray


class PredictionChain(Protocol):
    """The frozen inference chain dev-as-eval runs; it must never need a label."""

    name: str
    policies: Sequence[SystemPolicy]

    def predict(self, clips: Sequence[Clip]) -> dict[int, SystemOutput]: ...


def label_free(ds: DevDataset) -> DevDataset:
    """The dataset as an evaluation package would present it: same clips, ids, metadata and features, no labels."""
    clips = [dataclasses.replace(c, label=None, confidence=None) for c in ds.clips]
    return DevDataset(root=ds.root, name=ds.name, metadata_path=ds.metadata_path, clips=clips,
                      dropped_other=ds.dropped_other)


class TorchChain:
    """Fold checkpoints + sklearn ranker + the runtime's feature and policy code, on precomputed CLAP embeddings."""

    name = "torch"
    protocol = ALL_FOLDS

    def __init__(self, run_dir: Path | str, features_root: Path | str) -> None:
        self.run = load_run(run_dir)
        self.features_root = Path(features_root)
        self.policies: list[SystemPolicy] = load_systems(run_dir)
        self.class_text = class_text_embeddings(features_root)
        needs_ranker = any(p.use_ranker for p in self.policies)
        self.ranker, self.ranker_meta = load_ranker(run_dir) if needs_ranker else (None, {})
        families = sorted({f for p in self.policies for f in p.families}
                          | {p.fallback_audio_missing for p in self.policies}
                          | {p.fallback_text_missing for p in self.policies})
        self.models = {f: load_fold_models(self.run, f) for f in families}

    def predict(self, clips: Sequence[Clip]) -> dict[int, SystemOutput]:
        view = DevDataset(root=self.features_root, name="label-free", metadata_path=Path(), clips=list(clips))
        audio_present = view.embedding_mask("audio")
        text_present = np.array([bool(c.text.strip()) for c in clips])
        audio = view.load_embeddings("audio", missing="zero")
        text = view.load_embeddings("text", missing="zero")
        text_present &= view.embedding_mask("text")
        masked = view.load_embeddings("text_masked", missing="zero")
        probs = {f: family_probs(m, audio, text, masked) for f, m in self.models.items()}
        return {p.system_id: self._system(p, probs, text, audio_present, text_present) for p in self.policies}

    def _system(self, policy: SystemPolicy, probs: dict[str, np.ndarray], text: np.ndarray,
                audio_present: np.ndarray, text_present: np.ndarray) -> SystemOutput:
        score_rows = None
        if policy.use_ranker:
            if self.ranker_meta.get("feature_names") != list(FEATURE_NAMES) or self.ranker_meta.get("k") != policy.k:
                raise BstError(f"system {policy.system_id}: ranker.json does not match the policy (k, features)")
            score_rows = lambda rows: ranker_scores(self.ranker, rows)  # noqa: E731
        out = decide_items(policy, ensemble_probs(policy, probs), probs, text, self.class_text, audio_present,
                           text_present, score_rows)
        return SystemOutput(out.labels, out.scores, out.overridden)


def dev_as_eval(chain: PredictionChain, data_dir: Path | str) -> dict:
    """Predict label-blind, then (and only then) read the labels and score each system."""
    ds = read_dev_dataset(Path(data_dir))
    blind = label_free(ds)
    outputs = chain.predict(blind.clips)
    if any(len(o.labels) != len(ds) for o in outputs.values()):
        raise BstError(f"chain {chain.name} returned a prediction count other than {len(ds)}")
    truth = ds.label_indices  # labels are read here, after every prediction exists
    results = {}
    for sid, out in sorted(outputs.items()):
        metrics = evaluate_predictions(truth, out.labels)
        results[sid] = {**{c: float(metrics[c]) for c in TABLE3_COLUMNS},
                        "override_share": float(np.mean(out.overridden)) if len(out.overridden) else 0.0,
                        # the DCASE meta.yaml's results section: hP/hR overall and per class (as fractions)
                        "hP": float(metrics["hP"]), "hR": float(metrics["hR"]), "convention": metrics["convention"],
                        "per_class": {code: {k: row[k] for k in ("hP", "hR", "hF")}
                                      for code, row in metrics["per_class"].items()}}
    return {"chain": chain.name, "protocol": getattr(chain, "protocol", ALL_FOLDS), "items": len(ds),
            "systems": results}


def nested_figures(run_dir: Path | str) -> dict:
    """The nested-CV ranker estimate `bst-train rank` recorded (empty when no ranker was fitted)."""
    path = Path(run_dir) / RANKER_DIR / RANKER_JSON
    if not path.is_file():
        return {}
    return read_json(path).get("nested_cv", {})


def format_table3(report: dict, nested: dict, policies: Sequence[SystemPolicy]) -> str:
    """Seed Table 3's columns (percent) per system, with the nested estimate beside the ranker systems."""
    names = {p.system_id: p.name for p in policies}
    protocol = report.get("protocol", ALL_FOLDS)
    lines = [f"development-as-evaluation, {protocol} ({report['chain']} chain, {report['items']} clips, label-blind)",
             f"{'system':<22}{'hF':>9}{'flat':>9}{'top-level':>11}{'cross-parent':>14}{'overrides':>11}"
             f"{'held-out hF':>13}"]
    for sid, r in report["systems"].items():
        nest = nested.get(f"system{sid}", {}).get("hF")
        nest_s = f"{100 * nest:>13.2f}" if nest is not None else f"{'-':>13}"
        label = f"{sid} {names.get(sid, '')}"
        lines.append(f"{label:<22}{100 * r['hF']:>9.2f}{100 * r['accuracy']:>9.2f}"
                     f"{100 * r['parent_accuracy']:>11.2f}{100 * r['cross_parent_error']:>14.2f}"
                     f"{100 * r['override_share']:>10.1f}%{nest_s}")
    if "ensemble_oof_hF" in nested:
        lines.append(f"top-12 ensemble, out-of-fold (what the ranker reranks): "
                     f"hF {100 * nested['ensemble_oof_hF']:.2f}")
    if protocol == ALL_FOLDS:
        lines.append("note: each clip was in the training split of 4 of the 5 fold models averaged here, so these "
                     "figures are\noptimistic (a check that the deployed chain runs, not a score)")
    else:
        lines.append("each clip went through the chain frozen from its own fold (models, pools, ranker and "
                     "thresholds fitted\nwithout it)")
    lines.append("held-out hF = nested-CV ranker (systems 1, 2) / out-of-fold ensemble (systems 3, 4)")
    return "\n".join(lines)
