"""The deployable systems: `SystemPolicy` (what a system runs) and THE decision function, `decide_items`.

evidence (ensemble + family distributions, text embedding, modality flags) -> per-item fallback switch ->
candidate features (`candidate_features.candidate_features`) -> ranker scores (a callable: the bundle's ranker.onnx at
runtime, the sklearn model in training, out-of-fold scores in tuning) -> eq. 3 (docs/method.md) -> label and score:

    y = y_r  if  s_r - s_b > tau  and  parentSafe(y_r, y_b)  else  y_b,
    parentSafe = same parent, or (s_r - s_b > cross_parent_tau and s_r >= cross_parent_min_score).

Every step is item-local: an item's label and score depend only on its own evidence and the bundle, never on the
other items of a batch, package or run. A policy's `max_override_share` is a constraint of threshold TUNING (the
held-out override rate of the chosen thresholds stays at or below it, `bst_rt.train.ranker`); inference never looks at
how many other items were overridden. Pure numpy, so training, tuning, export validation and the runtime share it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .atomic import atomic_write_text
from .errors import BstError
from .candidate_features import CandidateFeatures, candidate_features, stack_features
from .taxonomy import NUM_CLASSES, PARENT_INDEX

SYSTEMS_SCHEMA = "bst-systems-v1"
TEXT_ONLY = "text-only"
AUDIO_ONLY = "audio-only"


@dataclass(frozen=True)
class SystemPolicy:
    """One submitted system, frozen: its ensemble, whether and how it reranks, and its missing-modality fallbacks.

    A margin is a difference of two probabilities, so `cross_parent_tau >= 1` disables cross-parent overrides.
    `max_override_share` is the tuning constraint the thresholds were chosen under (not applied at inference);
    `tuning` records the measured held-out override rate. `weights` are provenance at runtime: the deployed
    ensemble is the heads graph's `pool_probs`; only which families have a positive weight (the ranker's family
    features) is read from them.
    """

    system_id: int
    name: str
    pool: str
    weights: dict[str, float]
    use_ranker: bool
    k: int = 3
    tau: float = 1.0
    cross_parent_tau: float = 1.0
    cross_parent_min_score: float = 1.0
    max_override_share: float = 0.0
    fallback_audio_missing: str = TEXT_ONLY
    fallback_text_missing: str = AUDIO_ONLY
    description: str = ""
    tuning: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {f: w for f, w in self.weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad or not self.weights or not math.isclose(sum(self.weights.values()), 1.0, abs_tol=1e-6):
            raise BstError(f"system {self.system_id}: ensemble weights must be >= 0 and sum to 1, got {self.weights}")
        if not 0.0 <= self.max_override_share <= 1.0:
            raise BstError(f"system {self.system_id}: max_override_share must be in [0, 1]")
        if self.k < 1:
            raise BstError(f"system {self.system_id}: k must be >= 1")

    @property
    def families(self) -> tuple[str, ...]:
        """Families with a positive weight, in name order (the order of the ranker's family features)."""
        return tuple(sorted(f for f, w in self.weights.items() if w > 0))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "SystemPolicy":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise BstError(f"unknown SystemPolicy fields {sorted(unknown)}")
        values = dict(data)
        values["weights"] = {str(k): float(v) for k, v in values.get("weights", {}).items()}
        return cls(**values)


def save_policies(path: str | Path, policies: Sequence[SystemPolicy]) -> None:
    """Write systems.json atomically: a schema tag and the policies in system-id order."""
    ordered = sorted(policies, key=lambda p: p.system_id)
    payload = {"schema": SYSTEMS_SCHEMA, "systems": [p.to_dict() for p in ordered]}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load_policies(path: str | Path) -> list[SystemPolicy]:
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BstError(f"{path}: not valid JSON ({exc})") from None
    if payload.get("schema") != SYSTEMS_SCHEMA:
        raise BstError(f"{path}: schema {payload.get('schema')!r}, expected {SYSTEMS_SCHEMA!r}")
    return [SystemPolicy.from_dict(d) for d in payload["systems"]]


def normalise_weights(weights: Mapping[str, float], what: str) -> dict[str, float]:
    """The positive weights rescaled to sum to one, by family name (a stored pool may round its weights; the heads
    graph, the systems and ensemble selection all renormalise here). `what` names the pool in the one-line error."""
    positive = {str(f): float(w) for f, w in weights.items() if float(w) > 0}
    total = sum(positive.values())
    if not positive or not math.isfinite(total):
        raise BstError(f"{what} has no positive weights")
    return {f: w / total for f, w in sorted(positive.items())}


def weighted_sum(family_probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Seed eq. 2, the one definition: sum_m w_m p_m in float64, over `weights` in their order ([N, 23] each)."""
    return sum(w * np.asarray(family_probs[f], dtype=np.float64) for f, w in weights.items())


def ensemble_probs(policy: SystemPolicy, family_probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Seed eq. 2 over the policy's families ([N, 23] each) -> [N, 23]."""
    missing = [f for f in policy.families if f not in family_probs]
    if missing:
        raise BstError(f"system {policy.system_id}: no probabilities for families {missing}")
    return weighted_sum(family_probs, {f: policy.weights[f] for f in policy.families})


def item_evidence(
    policy: SystemPolicy, family_probs: Mapping[str, np.ndarray], audio_present: bool, text_present: bool,
    ensemble: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One item's (ensemble [23], selected families [F, 23]), switching to the fallback family when a modality is
    missing (no audio -> text-only; empty metadata -> audio-only), so features see what the runtime really ran.
    `ensemble` is the item's pool distribution when the caller has it (the runtime: the graph's `pool_probs`);
    without it eq. 2 is computed here from the policy's weights (the training side)."""
    if not audio_present or not text_present:
        fallback = policy.fallback_audio_missing if not audio_present else policy.fallback_text_missing
        if fallback not in family_probs:
            raise BstError(f"system {policy.system_id}: fallback family {fallback!r} has no probabilities")
        probs = np.asarray(family_probs[fallback], dtype=np.float64).reshape(NUM_CLASSES)
        return probs, probs[None, :]
    selected = np.stack([np.asarray(family_probs[f], dtype=np.float64).reshape(NUM_CLASSES) for f in policy.families])
    if ensemble is not None:
        return np.asarray(ensemble, dtype=np.float64).reshape(NUM_CLASSES), selected
    return ensemble_probs(policy, {f: selected[i] for i, f in enumerate(policy.families)}), selected


@dataclass(frozen=True)
class RankerChoice:
    """Per item: base prediction y_b and its ensemble probability, ranker scores s_b and the ranker's pick y_r, s_r."""

    base: np.ndarray
    base_prob: np.ndarray
    base_score: np.ndarray
    choice: np.ndarray
    choice_score: np.ndarray

    @property
    def margin(self) -> np.ndarray:
        return self.choice_score - self.base_score


@dataclass(frozen=True)
class Decisions:
    """Per item: final label index, its score in [0, 1], whether the ranker overrode the base, the ranker margin,
    and the distribution the base decision came from (`probabilities`, [N, 23]; set by `decide_items`)."""

    labels: np.ndarray
    scores: np.ndarray
    overridden: np.ndarray
    margin: np.ndarray
    base: np.ndarray
    base_prob: np.ndarray
    probabilities: np.ndarray | None = None

    @property
    def override_share(self) -> float:
        return float(self.overridden.mean()) if len(self.overridden) else 0.0


def ranker_choice(
    ensemble: np.ndarray, candidates: Sequence[np.ndarray], scores: np.ndarray, offsets: np.ndarray
) -> RankerChoice:
    """Reduce per-candidate ranker scores (rows of all items stacked, split by `offsets`) to one choice per item.

    The first candidate of each item is its base prediction (see `features.candidate_indices`); ties keep it.
    """
    ensemble = np.asarray(ensemble, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(candidates)
    base = np.empty(n, dtype=np.int64)
    choice = np.empty(n, dtype=np.int64)
    s_b = np.empty(n)
    s_r = np.empty(n)
    for i, cands in enumerate(candidates):
        item_scores = scores[offsets[i] : offsets[i + 1]]
        best = int(np.argmax(item_scores))
        base[i], s_b[i] = cands[0], item_scores[0]
        choice[i], s_r[i] = cands[best], item_scores[best]
    return RankerChoice(base, ensemble[np.arange(n), base], s_b, choice, s_r)


def no_ranker(ensemble: np.ndarray) -> RankerChoice:
    """The choice structure of a system without a ranker: the base prediction, never overridden."""
    ensemble = np.asarray(ensemble, dtype=np.float64)
    base = ensemble.argmax(axis=1)
    prob = ensemble[np.arange(len(base)), base]
    return _base_only(RankerChoice(base, prob, prob, base, prob))


def decide(
    choice: RankerChoice, *, tau: float, cross_parent_tau: float, cross_parent_min_score: float
) -> Decisions:
    """Eq. 3, item by item (vectorised; no item's outcome depends on another's)."""
    margin = choice.margin
    same_parent = PARENT_INDEX[choice.choice] == PARENT_INDEX[choice.base]
    parent_safe = same_parent | ((margin > cross_parent_tau) & (choice.choice_score >= cross_parent_min_score))
    overridden = (choice.choice != choice.base) & (margin > tau) & parent_safe
    labels = np.where(overridden, choice.choice, choice.base)
    scores = np.clip(np.where(overridden, choice.choice_score, choice.base_prob), 0.0, 1.0)
    return Decisions(labels, scores, overridden, margin, choice.base, choice.base_prob)


def apply_policy(policy: SystemPolicy, choice: RankerChoice) -> Decisions:
    """Eq. 3 with the policy's thresholds (the base prediction alone when the system has no ranker)."""
    if not policy.use_ranker:
        choice = _base_only(choice)
    return decide(choice, tau=policy.tau, cross_parent_tau=policy.cross_parent_tau,
                  cross_parent_min_score=policy.cross_parent_min_score)


ScoreRows = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ItemCandidates:
    """Per item: the distribution its base decision comes from (ensemble, or the fallback family's) and, for a
    ranker system, its candidates and their feature rows (all items stacked; `offsets` [N + 1] split them)."""

    probabilities: np.ndarray
    items: list[CandidateFeatures]
    rows: np.ndarray
    offsets: np.ndarray

    def choice(self, scores: np.ndarray) -> RankerChoice:
        return ranker_choice(self.probabilities, [it.candidates for it in self.items], scores, self.offsets)


def item_candidates(
    policy: SystemPolicy, ensemble: np.ndarray | None, family_probs: Mapping[str, np.ndarray],
    text_embeddings: np.ndarray, class_text_embeddings: np.ndarray, audio_present: np.ndarray,
    text_present: np.ndarray,
) -> ItemCandidates:
    """Evidence -> per-item fallback switch -> candidate features, one item at a time (a plain loop, so no value
    can depend on another item). `ensemble` [N, 23] (None: eq. 2 from `family_probs`), `family_probs` {f: [N, 23]}."""
    n = len(audio_present)
    probs, items = [], []
    for i in range(n):
        audio, text = bool(audio_present[i]), bool(text_present[i])
        ens, sel = item_evidence(policy, {f: p[i] for f, p in family_probs.items()}, audio, text,
                                 None if ensemble is None else ensemble[i])
        probs.append(ens)
        if policy.use_ranker:
            items.append(candidate_features(ens, sel, text_embeddings[i] if text else None, class_text_embeddings,
                                            audio_present=audio, text_present=text, k=policy.k))
    rows, offsets = stack_features(items)
    return ItemCandidates(np.stack(probs) if probs else np.zeros((0, NUM_CLASSES)), items, rows, offsets)


def decide_candidates(policy: SystemPolicy, cands: ItemCandidates, score_rows: ScoreRows | None) -> Decisions:
    """Ranker scores of the candidate rows (one call for all items; a row's score depends on that row alone), then
    eq. 3 with the policy's thresholds."""
    if policy.use_ranker:
        if score_rows is None:
            raise BstError(f"system {policy.system_id} uses the ranker but no ranker scores were given")
        scores = np.asarray(score_rows(cands.rows), dtype=np.float64) if len(cands.rows) else np.zeros(0)
        if scores.shape != (len(cands.rows),):
            raise BstError(f"system {policy.system_id}: ranker gave {scores.shape} scores for {len(cands.rows)} rows")
        choice = cands.choice(scores)
    else:
        choice = no_ranker(cands.probabilities)
    return dataclasses.replace(apply_policy(policy, choice), probabilities=cands.probabilities)


def decide_items(
    policy: SystemPolicy, ensemble: np.ndarray | None, family_probs: Mapping[str, np.ndarray],
    text_embeddings: np.ndarray, class_text_embeddings: np.ndarray, audio_present: np.ndarray,
    text_present: np.ndarray, score_rows: ScoreRows | None,
) -> Decisions:
    """THE decision of a system for N items, each decided alone: evidence -> candidate features -> ranker scores
    -> eq. 3 -> label and score. Called by the runtime predictor (ensemble = the graph's `pool_probs`, scores from
    ranker.onnx), dev-as-eval's torch chain and export validation (sklearn ranker), and `bst-train rank` (OOF scores)."""
    cands = item_candidates(policy, ensemble, family_probs, text_embeddings, class_text_embeddings, audio_present,
                            text_present)
    return decide_candidates(policy, cands, score_rows)


def _base_only(choice: RankerChoice) -> RankerChoice:
    zeros = np.zeros(len(choice.base))
    return RankerChoice(choice.base, choice.base_prob, zeros, choice.base, zeros)
