"""`Predictor`: the Python API and the batch loop behind `bst-rt predict`.

audio file + metadata → CLAP audio/text/masked-text embeddings (ORT) → fused heads graph (calibrated family
distributions and the pools' ensembles, `pool_probs`) → `policy.decide_items` (the system's pool row of
`pool_probs`, candidate features, ranker.onnx, eq. 3; the same function training runs) → label. Every item gets a
prediction: without usable audio the bundle's text-only family decides, with empty metadata the audio-only family,
and each such fallback is reported with its reason.

Every decision is item-local: `predict_file`, `predict_waveform`, `predict_clips` and `predict_batch` give an item
the same label and score whatever else is in the batch. Sessions are created once; `InferenceSession.run` is
thread-safe and the predictor keeps no per-call state (fallback counts are read from the predictions, stage times
go to the caller's `StageClock`), so one instance can serve several threads.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from . import policy
from .audio import file_to_mel_fusion, samples_to_mel_fusion
from .bundle import Bundle, load_bundle
from .clip import Clip
from .defaults import DEFAULT_BATCH_SIZE
from .embedding import MASKED_INPUT, AudioBatch, EmbeddingStage, StageClock, prefetch, read_audio, read_batch
from .encoders import INT8_ROWS_PER_RUN, AudioEncoder, TextEncoder
from .errors import BstError, BundleError
from .session import Providers, make_session, overall_provider, session_provider
from .taxonomy import CLASSES, CODE_TO_INDEX, CODES, PARENT_NAMES, parent_of
from .layout import HEADS_INPUTS, HEADS_OUTPUTS, RANKER_INPUT, RANKER_PROBABILITIES

TOP_K = 5


class RankedClass(NamedTuple):
    """One entry of `Prediction.top_k`."""

    code: str
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """One item's outcome.

    `label` / `label_name`: the class code (e.g. 'fx-a') and its name ('Animals'); `parent` / `parent_name` its
    top-level class. `score`: confidence in [0, 1] (the submission's score column). `top_k`: the `TOP_K` most
    probable classes of `probabilities`, the 23-class distribution the base decision came from (the system's
    ensemble, or the fallback family's). `fallback`: why a fallback family decided ('missing audio', 'empty
    metadata', ...), None when none did. `overridden`: True when the system's candidate re-ranker replaced the
    ensemble's top class with another candidate (so `label` may differ from `top_k[0]`); descriptive only."""

    id: str
    label: str
    label_name: str
    score: float
    parent: str
    parent_name: str
    top_k: tuple[RankedClass, ...]
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


def _make_prediction(item_id: str, label_index: int, score: float, probs: np.ndarray, fallback: str | None,
                     overridden: bool) -> Prediction:
    order = np.argsort(-probs, kind="stable")[:TOP_K]
    code = CODES[label_index]
    parent = parent_of(code)
    return Prediction(
        id=item_id, label=code, label_name=CLASSES[label_index].name, score=float(np.clip(score, 0.0, 1.0)),
        parent=parent, parent_name=PARENT_NAMES[parent],
        top_k=tuple(RankedClass(CODES[i], CLASSES[i].name, float(probs[i])) for i in order), probabilities=probs,
        fallback=fallback, overridden=overridden,
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


@dataclass(frozen=True)
class _SystemDecision:
    """What deciding for one system needs beyond the shared evidence: its policy and its row of `pool_probs`."""

    policy: policy.SystemPolicy
    pool_index: int


class Predictor:
    """Loaded bundle + sessions. Build with `Predictor.load`; use as a context manager (or call `close()`) to
    release the sessions.

    The system is a per-call parameter of the decision, not of the sessions: the encoders and the heads graph are
    the same for every system of a bundle, and `predict_systems_stream(batches, systems)` decides several systems
    from one pass of them. So the predictor holds the sessions and one `_SystemDecision` per system of the manifest
    (built at load, read-only afterwards, so threads share them); `system` given to `load` is only the default of
    the one-system methods (`predict_file`, `predict_clips`, ...), and `with_system(n)` is a view with another
    default over the same sessions."""

    def __init__(self, bundle: Bundle, system: int, providers: Providers, threads: int | None, int8: bool) -> None:
        m = bundle.manifest
        bundle.require([system], int8=int8)
        self.bundle = bundle
        self.system = int(system)
        self.int8 = bool(int8)
        self.families = list(m.heads.families)
        self.pools = list(m.heads.pools)
        self._decisions = {int(n): self._decision_of(policy.SystemPolicy.from_dict(spec))
                           for n, spec in m.systems.items()}
        audio = bundle.graph("audio_encoder", int8=int8)
        text = bundle.graph("text_encoder", int8=int8)
        self.audio_encoder = AudioEncoder(bundle.path(audio.file), provider=providers, threads=threads,
                                          rows_per_run=_rows_per_run(audio.precision))
        self.text_encoder = TextEncoder(
            bundle.path(text.file), bundle.path(m.text.tokenizer_file), provider=providers, threads=threads,
            rows_per_run=_rows_per_run(text.precision),
        )
        self.heads = make_session(bundle.path(bundle.graph("heads").file), provider=providers, threads=threads)
        #: a pool whose families never read an input has a heads graph without it (the exporter prunes it)
        self._heads_inputs = {i.name for i in self.heads.get_inputs()}
        self.ranker = None  # one session for every system that re-ranks (opened when the bundle has such a system)
        if any(d.policy.use_ranker for d in self._decisions.values()):
            self.ranker = make_session(bundle.path(bundle.graph("ranker").file), provider=providers, threads=threads)
        self.class_text = bundle.class_text_embeddings()
        self.positive_column = int(m.ranker.get("positive_column", 1))
        self._closed = False

    @classmethod
    def load(
        cls, bundle: str | Path | Bundle, system: int = 1, providers: Providers = "auto", threads: int | None = None,
        int8: bool = False, *, provider: Providers | None = None,
    ) -> "Predictor":
        """Verify the bundle (hashes, schema) and open its sessions once.

        `providers`: 'auto' (CUDA when it really works, else CPU), 'cpu', 'cuda', or onnxruntime's own list,
        e.g. `[("CUDAExecutionProvider", {"device_id": 1})]` or `["TensorrtExecutionProvider",
        "CUDAExecutionProvider"]`; every provider named must really be in use afterwards (else ProviderError).
        `provider` is the same argument under the CLI's name (`--provider`). `threads`: intra-op threads per
        session (None: onnxruntime's default). `int8`: the bundle's int8 CLAP graphs."""
        b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
        return cls(b, system, provider if provider is not None else providers, threads, int8)

    # ---- lifetime ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the onnxruntime sessions (their memory goes when the last reference does); later calls raise.
        Predictors made by `with_system` share the sessions: closing one closes them for all."""
        self.audio_encoder = self.text_encoder = self.heads = self.ranker = None  # type: ignore[assignment]
        self._closed = True

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BstError("this Predictor is closed; load the bundle again with Predictor.load")

    # ---- providers --------------------------------------------------------------------------------------------
    @property
    def policy(self) -> policy.SystemPolicy:
        """The default system's policy."""
        return self._decisions[self.system].policy

    @property
    def providers(self) -> dict[str, str]:
        """The provider each graph of the default system really runs on, from `session.get_providers()` (never
        what was asked for): 'cuda', 'cpu', or onnxruntime's name for any other (e.g. 'TensorrtExecutionProvider')."""
        self._check_open()
        sessions = {"audio_encoder": self.audio_encoder.session, "text_encoder": self.text_encoder.session,
                    "heads": self.heads, "ranker": self.ranker if self.policy.use_ranker else None}
        return {name: session_provider(s) for name, s in sessions.items() if s is not None}

    @property
    def all_providers(self) -> dict[str, str]:
        """`providers` of every graph this predictor opened (the ranker too when only another system uses it)."""
        self._check_open()
        return {**self.providers, **({"ranker": session_provider(self.ranker)} if self.ranker is not None else {})}

    @property
    def provider(self) -> str:
        """The one provider every graph runs on, or 'mixed' when they differ (e.g. some fell back to the CPU)."""
        return overall_provider(self.providers)

    # ---- public API -------------------------------------------------------------------------------------------
    def predict_file(self, path: str | os.PathLike | None, *, title: str = "", tags: str = "", description: str = "",
                     item_id: str | None = None) -> Prediction:
        """One sound file (any format libsndfile decodes) and its metadata. A missing, empty or undecodable file
        is not an error: the text-only family decides and `fallback` says why."""
        clip = Clip(id=item_id or (str(path) if path else ""), title=title, tags=tags, description=description,
                    audio_path=Path(path) if path else None)
        return self.predict_batch([clip], batch_size=1)[0]

    def predict_waveform(self, samples: np.ndarray | None, sample_rate: int, *, title: str = "", tags: str = "",
                         description: str = "", item_id: str = "") -> Prediction:
        """Audio the application already holds: `samples` [frames] or [frames, channels] (soundfile's layout),
        float in [-1, 1] or integer PCM, at any rate from 1 kHz to 768 kHz. It takes the same front end as a
        file, so the same samples written to a float WAV predict identically. `samples=None` falls back to the
        text-only family ('missing audio'); malformed samples (wrong shape or dtype, no samples, a rate out of
        range) raise AudioError, a caller's mistake rather than a bad item."""
        clip = Clip(id=item_id, title=title, tags=tags, description=description)
        if samples is None:
            batch = AudioBatch([clip], [None], ["missing audio"], [None])
        else:
            batch = AudioBatch([clip], [samples_to_mel_fusion(samples, sample_rate)], [None], [None])
        return next(self._decide_stream(iter([batch]), [self.system], StageClock()))[self.system][0]

    def predict_clips(self, clips: Iterable[Clip], batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[Prediction]:
        """Stream predictions, `batch_size` clips per encoder call, the next batch's audio read in a worker thread
        meanwhile (`embedding.prefetch`); each item is decided alone (`policy.decide_items`)."""
        for by_system in self.predict_systems_stream(_chunks(clips, batch_size), [self.system]):
            yield from by_system[self.system]

    def predict_batch(self, clips: Sequence[Clip], batch_size: int = DEFAULT_BATCH_SIZE) -> list[Prediction]:
        """All items in order; the same labels and scores as predicting each alone."""
        return list(self.predict_clips(clips, batch_size))

    def embed_audio(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """The CLAP audio embedding [512] float32, L2-normalised, of a file or of in-memory samples (then give
        `sample_rate`; same layouts as `predict_waveform`): what the classifier's heads read. Raises AudioError
        when the audio cannot be used (there is no fallback for an embedding)."""
        self._check_open()
        if isinstance(audio, np.ndarray):
            if sample_rate is None:
                raise BstError("embed_audio: give sample_rate with in-memory samples")
            mel, longer = samples_to_mel_fusion(audio, sample_rate)
        else:
            mel, longer = file_to_mel_fusion(audio)
        return self.audio_encoder.embed_mel(mel[None], np.array([longer]))[0]

    def embed_text(self, text: str) -> np.ndarray:
        """The CLAP text embedding [512] float32, L2-normalised, of `text` exactly as given (the classifier embeds
        `Clip.text`, the metadata template; to compare with a sound, e.g. for search, embed any phrase)."""
        self._check_open()
        if not text:
            raise BstError("embed_text: empty text (nothing to embed)")
        return self._embedding_stage(StageClock()).embed_texts([text])[text]

    @property
    def embedding(self) -> EmbeddingStage:
        """The embedding stage over this predictor's encoders (its own clock: nothing accumulates here)."""
        return self._embedding_stage(StageClock())

    # ---- several systems, run-level loop (bst-rt predict) -----------------------------------------------------
    def predict_systems_stream(self, batches: Iterable[Sequence[Clip]], systems: Sequence[int],
                               hashes: dict[str, str | None] | None = None, clock: StageClock | None = None,
                               ) -> Iterator[dict[int, list[Prediction]]]:
        """Several systems of each batch from one pass of the encoders and heads, the next batch's audio read
        meanwhile (`prefetch`). With `hashes`, each clip's file sha256 is put there (id -> sha256 or None), computed
        by that reader, so the run record never reads the audio again. Stage times go to `clock` (the caller's)."""
        clock = clock if clock is not None else StageClock()
        audio = prefetch(batches, clock, hash_files=hashes is not None)
        if hashes is not None:
            audio = _recording_hashes(audio, hashes)
        yield from self._decide_stream(audio, systems, clock)

    def predict_systems(self, clips: Sequence[Clip], systems: Sequence[int]) -> dict[int, list[Prediction]]:
        """Several systems of the bundle from one pass of the encoders (dev-as-eval, parity checks)."""
        self.bundle.require(systems)
        ev = self._evidence(clips)
        return {int(n): self._decide(clips, ev, int(n)) for n in systems}

    def with_system(self, system: int) -> "Predictor":
        """The same predictor (the same sessions) with `system` as the default of the one-system methods."""
        self._check_open()
        self.bundle.require([system])
        if int(system) == self.system:
            return self
        other = copy.copy(self)
        other.system = int(system)
        return other

    def _decide_stream(self, audio: Iterator[AudioBatch], systems: Sequence[int], clock: StageClock,
                       ) -> Iterator[dict[int, list[Prediction]]]:
        self._check_open()
        self.bundle.require(systems)
        for batch in audio:
            ev = self._evidence(batch.clips, batch, clock)
            with clock.stage("decision (features+ranker)"):
                out = {int(n): self._decide(batch.clips, ev, int(n)) for n in systems}
            yield out

    def _decision_of(self, system_policy: policy.SystemPolicy) -> _SystemDecision:
        """The system's policy and its axis in the graph's `pool_probs` (the manifest records the pool order)."""
        if system_policy.pool not in self.pools:
            raise BundleError(f"{self.bundle.root}: system {system_policy.system_id} names pool "
                              f"{system_policy.pool!r}, which the heads graph does not compute "
                              f"(pools: {', '.join(self.pools)})")
        return _SystemDecision(system_policy, self.pools.index(system_policy.pool))

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.ranker.run([RANKER_PROBABILITIES], {RANKER_INPUT: rows})[0][:, self.positive_column]

    def _decide(self, clips: Sequence[Clip], ev: "_Evidence", system: int) -> list[Prediction]:
        """`policy.decide_items` for `system` on the batch's evidence: the ensemble is the graph's pool row, never
        recomputed."""
        d = self._decisions[system]
        dec = policy.decide_items(
            d.policy, ev.pool_probs[:, d.pool_index],
            {f: ev.family_probs[:, j] for j, f in enumerate(self.families)}, ev.text, self.class_text,
            ev.audio_present, ev.text_present, self._score_rows if d.policy.use_ranker else None,
        )
        return [_make_prediction(clip.id, int(dec.labels[i]), float(dec.scores[i]), dec.probabilities[i],
                                 ev.reasons[i], bool(dec.overridden[i])) for i, clip in enumerate(clips)]

    # ---- evidence ---------------------------------------------------------------------------------------------
    def _embedding_stage(self, clock: StageClock) -> EmbeddingStage:
        return EmbeddingStage(self.audio_encoder, self.text_encoder, MASKED_INPUT in self._heads_inputs, clock)

    def _evidence(self, clips: Sequence[Clip], audio: AudioBatch | None = None,
                  clock: StageClock | None = None) -> _Evidence:
        """Embeddings (`embedding.EmbeddingStage`) then the heads graph; `audio` is the batch already read by
        `prefetch` (read here when None)."""
        self._check_open()
        clock = clock if clock is not None else StageClock()
        emb = self._embedding_stage(clock).embed(audio if audio is not None else read_batch(clips, clock))
        feeds = dict(zip(HEADS_INPUTS, (emb.audio, emb.text, emb.masked)))
        with clock.stage("heads graph"):
            fam, pool = self.heads.run(
                list(HEADS_OUTPUTS), {k: v for k, v in feeds.items() if k in self._heads_inputs}
            )
        return _Evidence(emb.text, emb.audio_present, emb.text_present, emb.reasons, fam, pool)


def _rows_per_run(precision: str) -> int | None:
    """The manifest's precision of a graph decides how it is called: int8 graphs one item per call."""
    return INT8_ROWS_PER_RUN if precision == "int8" else None


def _recording_hashes(audio: Iterator[AudioBatch], hashes: dict[str, str | None]) -> Iterator[AudioBatch]:
    for batch in audio:
        hashes.update((c.id, h) for c, h in zip(batch.clips, batch.sha256))
        yield batch


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
