"""The embedding stage of prediction: clips → audio, text and masked-text CLAP embeddings, and what makes it fast.

Every shortcut here is exact by construction, so an item's embeddings never depend on which shortcut fired or on
the other items of its batch:
- the masked text is encoded only when the heads graph reads `masked_text_embedding` (the exporter prunes inputs
  no family reads);
- a string is encoded once per batch: a text that class-word masking leaves unchanged, and repeated texts, reuse
  the embedding of the identical string (same input, same graph: the same vector, not an approximation);
- each text is padded to its own bucket (`encoders.token_bucket_calls`: its token count rounded up to a multiple
  of `TOKEN_BUCKET`, at most 77), fixed by the text alone, and texts of one bucket run together: padding costs at
  most 7 tokens a text instead of up to 76 (text time follows the token count), and the batch's longest text never
  changes the shapes another text is computed with. A text run alone (int8) needs no bucket: it runs at its exact
  token count. (Exact counts for every text, grouped across windows of the whole package, made fewer tokens but
  slower calls: bench/fp32_levers.py);
- an encoder's `rows_per_run` caps the items of one graph call: int8 graphs run one item per call
  (`encoders.INT8_ROWS_PER_RUN`: their activation scales are per call, so batch-mates would move an item's
  embedding); fp32 graphs stay batched (bit-identical either way; the cost is in bench/'s output);
- `prefetch` reads the next batch (decode, resample, mel, and the sha256 the run record needs) in one worker
  thread while onnxruntime runs the current batch; the queue holds one batch, so at most two batches of mels are
  alive.
`StageClock` sums wall time per stage (the bench prints it); it never changes a result.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .audio import file_to_mel_fusion
from .clip import Clip
from .hashing import file_sha256
from .encoders import EMBEDDING_DIM, AudioEncoder, TextEncoder
from .errors import AudioError
from .layout import MASKED_INPUT  # noqa: F401 (re-exported for predict.py)
from .text import mask_class_words


class StageClock:
    """Seconds per stage, summed over a run; safe to use from the prefetch thread and the caller's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: Counter[str] = Counter()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] += time.perf_counter() - t0


@dataclass(frozen=True)
class AudioBatch:
    """One batch's audio as read: fusion inputs (None where unusable), fallback reasons, and the files' sha256
    (None when not asked for, or for a missing / unreadable file)."""

    clips: Sequence[Clip]
    mels: list[tuple[np.ndarray, bool] | None]
    reasons: list[str | None]
    sha256: list[str | None]


@dataclass(frozen=True)
class Embeddings:
    audio: np.ndarray  # [B, 512], zeros where audio is absent
    text: np.ndarray  # [B, 512], zeros where metadata is empty
    masked: np.ndarray  # [B, 512], zeros where empty or where no family reads it
    audio_present: np.ndarray
    text_present: np.ndarray
    reasons: list[str | None]


def read_audio(path: Path | None) -> tuple[tuple[np.ndarray, bool] | None, str | None]:
    """The clip's fusion input (mel_fusion [4, 1001, 64], longer), streamed from the file so memory stays bounded
    for long clips, or None and the fallback reason (never raises for a bad file: the item falls back)."""
    if path is None:
        return None, "missing audio"
    try:
        if Path(path).stat().st_size == 0:
            return None, "zero-byte audio"
        return file_to_mel_fusion(path), None
    except FileNotFoundError:
        return None, "missing audio"
    except (AudioError, OSError, MemoryError) as exc:
        return None, f"undecodable audio: {exc}"


def _sha256_or_none(path: Path | None) -> str | None:
    try:
        return file_sha256(path) if path is not None and Path(path).is_file() else None
    except OSError:
        return None


def read_batch(clips: Sequence[Clip], clock: StageClock, hash_files: bool = False) -> AudioBatch:
    """Front end of one batch, one clip's waveform at a time (never the batch's). With `hash_files` each file is
    hashed right after it was decoded (its bytes are in the page cache then), so the run record need not read the
    package again after the CSV is written."""
    mels, reasons, hashes = [], [], []
    for clip in clips:
        with clock.stage("front end (decode+resample+mel)"):
            mel, reason = read_audio(clip.audio_path)
        mels.append(mel)
        reasons.append(reason)
        if hash_files:
            with clock.stage("hash audio"):
                hashes.append(_sha256_or_none(clip.audio_path))
        else:
            hashes.append(None)
    return AudioBatch(clips, mels, reasons, hashes)


def prefetch(batches: Iterable[Sequence[Clip]], clock: StageClock, hash_files: bool = False) -> Iterator[AudioBatch]:
    """`read_batch` of each batch, one batch ahead in a worker thread (queue of one: bounded memory). An error in
    the worker is raised here, in the caller's thread; closing the iterator early stops the worker."""
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for clips in batches:
                if not put(read_batch(clips, clock, hash_files)):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=work, name="bst-front-end", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


class EmbeddingStage:
    """Audio batch + metadata → the heads graph's inputs. `needs_masked`: whether the heads graph reads the
    masked text embedding (when it does not, the masked pass is skipped and its input left at zeros). Each
    encoder's `rows_per_run` (one item per call for int8 graphs) is honoured here too."""

    def __init__(self, audio_encoder: AudioEncoder, text_encoder: TextEncoder, needs_masked: bool,
                 clock: StageClock) -> None:
        self.audio_encoder = audio_encoder
        self.text_encoder = text_encoder
        self.needs_masked = needs_masked
        self.clock = clock

    def _texts_of(self, texts: Sequence[str]) -> list[str]:
        """The strings the text graph is asked for: each non-empty text, and its masked form when read."""
        plain = [t for t in texts if t]
        return plain + ([mask_class_words(t) for t in plain] if self.needs_masked else [])

    def embed(self, batch: AudioBatch) -> Embeddings:
        clips, mels = batch.clips, batch.mels
        n = len(clips)
        reasons = list(batch.reasons)
        texts = [c.text for c in clips]
        text_present = np.array([bool(t) for t in texts], dtype=bool)
        audio_present = np.array([m is not None for m in mels], dtype=bool)
        for i in range(n):
            if reasons[i] is None and not text_present[i]:
                reasons[i] = "empty metadata"
        audio = np.zeros((n, EMBEDDING_DIM), dtype=np.float32)
        have = [i for i in range(n) if mels[i] is not None]
        if have:
            with self.clock.stage("audio graph"):
                audio[have] = self.audio_encoder.embed_mel(np.stack([mels[i][0] for i in have]),
                                                           np.array([mels[i][1] for i in have], dtype=bool))
        text = np.zeros((n, EMBEDDING_DIM), dtype=np.float32)
        masked = np.zeros((n, EMBEDDING_DIM), dtype=np.float32)
        idx = [i for i in range(n) if text_present[i]]
        if idx:
            wanted = self._texts_of([texts[i] for i in idx])  # plain texts, then their masked forms when read
            table = self.embed_texts(wanted)
            text[idx] = np.stack([table[t] for t in wanted[:len(idx)]])
            if self.needs_masked:
                masked[idx] = np.stack([table[t] for t in wanted[len(idx):]])
        return Embeddings(audio, text, masked, audio_present, text_present, reasons)

    def embed_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Embedding of each distinct string, each padded to its own token bucket (see the module docstring)."""
        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}
        with self.clock.stage("text graph"):
            emb = self.text_encoder.embed(unique)
        return dict(zip(unique, emb))

    def embed_texts_plain(self, texts: Sequence[str]) -> np.ndarray:
        """Reference without the shortcuts: every string encoded, duplicates included, each alone at its own
        bucket (what `embed_texts` must equal exactly; tests compare the two)."""
        rows = [self.text_encoder.embed([t])[0] for t in texts]
        return np.stack(rows) if rows else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
