"""`Predictor`: the Python API and the batch loop behind `bst-rt predict`.

audio file + metadata → CLAP audio/text/masked-text embeddings (ORT) → fused heads graph (calibrated family
distributions and the pools' ensembles, `pool_probs`) → `policy.decide_items` (the system's pool row of
`pool_probs`, candidate features, ranker.onnx, eq. 3; the same function training runs) → label. Every item gets a
prediction: without usable audio the bundle's text-only family decides, with empty metadata the audio-only family,
and each such fallback is reported with its reason.

Every decision is item-local: `predict_file`, `predict_clips` and `predict_batch` give an item the same label and
score whatever else is in the batch. Sessions are created once; `InferenceSession.run` is thread-safe and the
predictor keeps no per-call state, so one instance can serve several threads.
"""
from __future__ import annotations

import copy
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import policy as pol
from .bundle import Bundle, load_bundle
from .datasets import Clip
from .embedding import MASKED_INPUT, AudioBatch, EmbeddingStage, StageClock, prefetch, read_audio, read_batch
from .encoders import AudioEncoder, TextEncoder
from .errors import BundleError
from .layout import HEADS_INPUTS, HEADS_OUTPUTS, RANKER_INPUT, RANKER_PROBABILITIES
from .session import make_session, session_provider
from .taxonomy import CODE_TO_INDEX, CODES, parent_of

TOP_K = 5


@dataclass(frozen=True)
class Prediction:
    """One item's outcome. `probabilities` is the distribution the base decision came from (the system's ensemble,
    or the fallback family's); `fallback` says why a fallback family decided (None when none did)."""

    id: str
    label: str
    score: float
    parent: str
    top_k: tuple[tuple[str, float], ...]
    probabilities: np.ndarray
    fallback: str | None = None
    overridden: bool = False

    def to_record(self) -> dict:
        """JSON-safe form (the resume journal); `from_record` inverts it exactly (floats round-trip via repr)."""
        return {
            "id": self.id, "label": self.label, "score": self.score, "fallback": self.fallback,
            "overridden": self.overridden, "probabilities": [float(p) for p in self.probabilities],
        }

    @classmethod
    def from_record(cls, rec: dict) -> "Prediction":
        probs = np.asarray(rec["probabilities"], dtype=np.float64)
        return _make_prediction(rec["id"], CODE_TO_INDEX[rec["label"]], float(rec["score"]), probs, rec["fallback"],
                                bool(rec["overridden"]))


def _make_prediction(item_id, label_index, score, probs, fallback, overridden) -> Prediction:
    order = np.argsort(-probs, kind="stable")[:TOP_K]
    code = CODES[label_index]
    return Prediction(
        id=item_id, label=code, score=float(np.clip(score, 0.0, 1.0)), parent=parent_of(code),
        top_k=tuple((CODES[i], float(probs[i])) for i in order), probabilities=probs, fallback=fallback,
        overridden=overridden,
    )


@dataclass(frozen=True)
class _Evidence:
    """A batch's inference-time evidence: embeddings, modality flags, fallback reasons, family distributions."""

    text: np.ndarray
    audio_present: np.ndarray
    text_present: np.ndarray
    reasons: list[str | None]
    family_probs: np.ndarray  # [B, F, 23]
    pool_probs: np.ndarray  # [B, P, 23]


class Predictor:
    """Loaded bundle + sessions for one system. Build with `Predictor.load`."""

    def __init__(self, bundle: Bundle, system: int, provider: str, threads: int | None, int8: bool) -> None:
        m = bundle.manifest
        if str(system) not in m.systems:
            raise BundleError(f"{bundle.root}: no system {system} (bundle has {', '.join(sorted(m.systems))})")
        if int8 and not bundle.has_int8():
            raise BundleError(f"{bundle.root}: no int8 graphs in this bundle (re-export with `bst-train export --int8`)")
        self.bundle = bundle
        self.system = int(system)
        self.policy = pol.SystemPolicy.from_dict(m.systems[str(system)])
        self.int8 = bool(int8)
        audio = bundle.graph("audio_encoder", int8=int8)
        text = bundle.graph("text_encoder", int8=int8)
        self.audio_encoder = AudioEncoder(bundle.path(audio.file), provider=provider, threads=threads)
        self.text_encoder = TextEncoder(
            bundle.path(text.file), bundle.path(m.text.tokenizer_file), provider=provider, threads=threads
        )
        self.heads = make_session(bundle.path(bundle.graph("heads").file), provider=provider, threads=threads)
        #: a pool whose families never read an input has a heads graph without it (the exporter prunes it)
        self._heads_inputs = {i.name for i in self.heads.get_inputs()}
        self.ranker = None
        if self.policy.use_ranker:
            self.ranker = make_session(bundle.path(bundle.graph("ranker").file), provider=provider, threads=threads)
        self._provider, self._threads = provider, threads
        self.class_text = bundle.class_text_embeddings()
        self.families = list(m.heads.families)
        self.pools = list(m.heads.pools)
        self._pool_index = self._pool_of(self.policy)
        self.positive_column = int(m.ranker.get("positive_column", 1))
        self._lock = threading.Lock()
        self.fallbacks: Counter[str] = Counter()
        #: wall seconds per stage over this predictor's life (bench/predict.py prints them)
        self.clock = StageClock()
        self.embedding = EmbeddingStage(self.audio_encoder, self.text_encoder, MASKED_INPUT in self._heads_inputs,
                                        self.clock)

    @classmethod
    def load(
        cls, bundle: str | Path | Bundle, system: int = 1, provider: str = "auto", threads: int | None = None,
        int8: bool = False,
    ) -> "Predictor":
        """Verify the bundle (hashes, schema) and open its sessions once."""
        b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
        return cls(b, system, provider, threads, int8)

    @property
    def providers(self) -> dict[str, str]:
        """'cuda' or 'cpu' per session: what onnxruntime really runs each graph on (never what was asked for)."""
        sessions = {"audio_encoder": self.audio_encoder.session, "text_encoder": self.text_encoder.session,
                    "heads": self.heads, "ranker": self.ranker}
        return {name: session_provider(s) for name, s in sessions.items() if s is not None}

    @property
    def provider(self) -> str:
        """'cuda', 'cpu', or 'mixed' when some graphs fell back to the CPU."""
        used = set(self.providers.values())
        return used.pop() if len(used) == 1 else "mixed"

    # ---- public API -------------------------------------------------------------------------------------------
    def predict_file(self, path: str | Path | None, *, title: str = "", tags: str = "", description: str = "",
                     item_id: str | None = None) -> Prediction:
        clip = Clip(id=item_id or (str(path) if path else ""), title=title, tags=tags, description=description,
                    audio_path=Path(path) if path else None)
        return self.predict_batch([clip], batch_size=1)[0]

    def predict_clips(self, clips: Iterable[Clip], batch_size: int = 8) -> Iterator[Prediction]:
        """Stream predictions, `batch_size` clips per encoder call, the next batch's audio read in a worker thread
        meanwhile (`embedding.prefetch`); each item is decided alone (`policy.decide_items`)."""
        for by_system in self.predict_systems_stream(_chunks(clips, batch_size), [self.system]):
            yield from by_system[self.system]

    def predict_batch(self, clips: Sequence[Clip], batch_size: int = 8) -> list[Prediction]:
        """All items in order; the same labels and scores as predicting each alone."""
        items: list[Prediction] = []
        return list(self.predict_clips(clips, batch_size))

    def predict_systems_stream(self, batches: Iterable[Sequence[Clip]], systems: Sequence[int],
                               hashes: dict[str, str | None] | None = None) -> Iterator[dict[int, list[Prediction]]]:
        """Several systems of each batch from one pass of the encoders and heads, the next batch's audio read
        meanwhile (`prefetch`). With `hashes`, each clip's file sha256 is put there (id -> sha256 or None), computed
        by that reader, so the run record never reads the audio again."""
        others = {n: self.with_system(n) for n in systems}
        for audio in prefetch(batches, self.clock, hash_files=hashes is not None):
            if hashes is not None:
                hashes.update((c.id, h) for c, h in zip(audio.clips, audio.sha256))
            ev = self._evidence(audio.clips, audio)
            with self._lock:
                self.fallbacks.update(r.split(":")[0] for r in ev.reasons if r)
            with self.clock.stage("decision (features+ranker)"):
                out = {n: p._decide(audio.clips, ev) for n, p in others.items()}
            yield out

    def predict_systems(self, clips: Sequence[Clip], systems: Sequence[int]) -> dict[int, list[Prediction]]:
        """Several systems of the bundle from one pass of the encoders (dev-as-eval, parity checks)."""
        ev = self._evidence(clips)
        return {n: self.with_system(n)._decide(clips, ev) for n in systems}

    def with_system(self, system: int) -> "Predictor":
        """Another system of the same bundle, sharing the already open sessions."""
        if int(system) == self.system:
            return self
        other = copy.copy(self)
        m = self.bundle.manifest
        if str(system) not in m.systems:
            raise BundleError(f"{self.bundle.root}: no system {system} (bundle has {', '.join(sorted(m.systems))})")
        other.system = int(system)
        other.policy = pol.SystemPolicy.from_dict(m.systems[str(system)])
        other._pool_index = other._pool_of(other.policy)
        if other.policy.use_ranker and other.ranker is None:
            other.ranker = make_session(self.bundle.path(self.bundle.graph("ranker").file), provider=self._provider,
                                        threads=self._threads)
        other._lock = threading.Lock()
        other.fallbacks = Counter()
        return other

    def _pool_of(self, policy: pol.SystemPolicy) -> int:
        """The system's axis in the graph's `pool_probs` (the manifest records the pool order)."""
        if policy.pool not in self.pools:
            raise BundleError(f"{self.bundle.root}: system {policy.system_id} names pool {policy.pool!r}, which the "
                              f"heads graph does not compute (pools: {', '.join(self.pools)})")
        return self.pools.index(policy.pool)

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.ranker.run([RANKER_PROBABILITIES], {RANKER_INPUT: rows})[0][:, self.positive_column]

    def _decide(self, clips: Sequence[Clip], ev: "_Evidence") -> list[Prediction]:
        """`policy.decide_items` on the batch's evidence: the ensemble is the graph's pool row, never recomputed."""
        dec = pol.decide_items(
            self.policy, ev.pool_probs[:, self._pool_index],
            {f: ev.family_probs[:, j] for j, f in enumerate(self.families)}, ev.text, self.class_text,
            ev.audio_present, ev.text_present, self._score_rows if self.policy.use_ranker else None,
        )
        return [_make_prediction(clip.id, int(dec.labels[i]), float(dec.scores[i]), dec.probabilities[i],
                                 ev.reasons[i], bool(dec.overridden[i])) for i, clip in enumerate(clips)]

    # ---- evidence ---------------------------------------------------------------------------------------------
    def _evidence(self, clips: Sequence[Clip], audio: AudioBatch | None = None) -> _Evidence:
        """Embeddings (`embedding.EmbeddingStage`) then the heads graph; `audio` is the batch already read by
        `prefetch` (read here when None)."""
        emb = self.embedding.embed(audio if audio is not None else read_batch(clips, self.clock))
        feeds = dict(zip(HEADS_INPUTS, (emb.audio, emb.text, emb.masked)))
        with self.clock.stage("heads graph"):
            fam, pool = self.heads.run(
                list(HEADS_OUTPUTS), {k: v for k, v in feeds.items() if k in self._heads_inputs}
            )
        return _Evidence(emb.text, emb.audio_present, emb.text_present, emb.reasons, fam, pool)


def _chunks(clips: Iterable[Clip], size: int) -> Iterator[list[Clip]]:
    batch: list[Clip] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_read_audio = read_audio  # the name tests and bench/long_clip.py import
