"""CLAP audio and text encoders on onnxruntime: the numpy front end / tokenizer, then the exported graphs.

I/O names (stable; a change is a bundle schema bump): audio `mel_fusion` [batch, 4, 1001, 64] float32 and
`longer` [batch] bool -> `audio_embedding` [batch, 512]; text `input_ids`, `attention_mask` [batch, tokens]
int64 -> `text_embedding` [batch, 512]. Embeddings come out L2-normalised.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .audio import file_to_mel_fusion, waveforms_to_mel_fusion
from .layout import EMBEDDING_DIM  # noqa: F401 (re-exported: the encoders' output width)
from .session import Providers, make_session, session_provider
from .text import MAX_TOKENS
from .tokenizer import Tokenizer

AUDIO_INPUTS = ("mel_fusion", "longer")
AUDIO_OUTPUT = "audio_embedding"
TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUT = "text_embedding"
#: file names of the exported graphs in a CLAP graph folder / bundle (written by bst_rt.export.clap)
AUDIO_GRAPH, TEXT_GRAPH = "clap_audio.onnx", "clap_text.onnx"
AUDIO_INT8, TEXT_INT8 = "clap_audio.int8.onnx", "clap_text.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
#: int8 graphs quantise activations with one scale per call (onnxruntime's dynamic quantisation takes the min/max of
#: the whole tensor), so rows sharing a call move each other's embeddings: they are run one item per call. fp32
#: graphs are bit-identical batched (tests/test_item_local.py measures both).
INT8_ROWS_PER_RUN = 1
#: texts of one token bucket are run in calls of at most this many rows (bounds the text graph's activations)
TEXT_ROWS_PER_RUN = 32
#: a batched text is padded to its token count rounded up to a multiple of this (at most `MAX_TOKENS`): the shape
#: is fixed by the text alone, and texts of one bucket share a call. Padding costs at most 7 tokens a text; exact
#: lengths (bucket 1) make more, smaller calls, which bench/fp32_levers.py measured slower on the demo sets.
TOKEN_BUCKET = 8


class AudioEncoder:
    """Waveforms or files -> [B, 512]; batches are run as given (the caller picks the batch size), at most
    `rows_per_run` clips per graph call (`INT8_ROWS_PER_RUN` for an int8 graph; None: the whole batch). Every call
    of the audio graph goes through `run_mel`, the one place its inputs are named (`AUDIO_INPUTS`)."""

    def __init__(self, graph_path: str | os.PathLike, provider: Providers = "cpu", threads: int | None = None,
                 rows_per_run: int | None = None):
        self.session = make_session(graph_path, provider, threads)
        self.provider = session_provider(self.session)
        self.rows_per_run = rows_per_run

    def embed_mel(self, mel_fusion: np.ndarray, longer: np.ndarray) -> np.ndarray:
        n = mel_fusion.shape[0]
        if n == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        step = self.rows_per_run or n
        parts = [self.run_mel(mel_fusion[s:s + step], longer[s:s + step]) for s in range(0, n, step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def run_mel(self, mel_fusion: np.ndarray, longer: np.ndarray) -> np.ndarray:
        """One call of the graph on exactly these rows (no `rows_per_run` split: `embed_mel` is the batched way)."""
        return run_audio_graph(self.session, mel_fusion, longer)

    def embed_waveforms(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """48 kHz mono waveforms (any length; quantised here exactly as laion-clap does)."""
        return self.embed_mel(*waveforms_to_mel_fusion(waveforms))

    def embed_files(self, paths: Iterable[str | os.PathLike]) -> np.ndarray:
        items = [file_to_mel_fusion(p) for p in paths]
        if not items:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return self.embed_mel(np.stack([m for m, _ in items]), np.array([lg for _, lg in items]))


class TextEncoder:
    """Texts -> [B, 512], each text padded to its own token bucket (`token_bucket_calls`): the shape a text is
    computed with is fixed by that text alone, never by the texts it shares a call with, so its embedding does not
    depend on the batch (fp32 kernels give the same bits batched: tests/test_item_local.py). Texts of one bucket
    run together, at most `rows_per_run` a call (`INT8_ROWS_PER_RUN` for an int8 graph, and a text run alone needs
    no bucket: it runs at its exact token count; None: `TEXT_ROWS_PER_RUN`). Every call of the text graph goes
    through `run_tokens`, the one place its inputs are named (`TEXT_INPUTS`)."""

    def __init__(self, graph_path: str | os.PathLike, tokenizer_path: str | os.PathLike,
                 provider: Providers = "cpu", threads: int | None = None, rows_per_run: int | None = None):
        self.session = make_session(graph_path, provider, threads)
        self.provider = session_provider(self.session)
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.rows_per_run = rows_per_run

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        ids = self.tokenizer.token_ids(texts) if len(texts) else []
        for rows, input_ids, mask in token_bucket_calls(ids, self.tokenizer, self.rows_per_run, self.token_bucket):
            out[rows] = self.run_tokens(input_ids, mask)
        return out

    @property
    def token_bucket(self) -> int:
        """This encoder's bucket: 1 (exact token count) when each text runs alone, else `TOKEN_BUCKET`."""
        return 1 if self.rows_per_run == 1 else TOKEN_BUCKET

    def run_tokens(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One call of the graph on already tokenised, padded rows (`embed` pads them to their bucket)."""
        return run_text_graph(self.session, input_ids, attention_mask)


def bucket_length(n_tokens: int, bucket: int = TOKEN_BUCKET) -> int:
    """The padded length of a text of `n_tokens` tokens: rounded up to a multiple of `bucket`, at most 77."""
    return min(MAX_TOKENS, -(-max(n_tokens, 1) // bucket) * bucket)


def token_bucket_calls(ids: Sequence[Sequence[int]], tokenizer: Tokenizer, rows_per_run: int | None = None,
                       bucket: int = TOKEN_BUCKET) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
    """The text graph's calls for these token id lists: (row indices, input_ids, attention_mask), rows of one
    bucket together (shortest first), each padded to `bucket_length`, at most `rows_per_run` (default
    `TEXT_ROWS_PER_RUN`) a call. `bucket=1`: every text at its exact token count (no padding)."""
    step = min(rows_per_run or TEXT_ROWS_PER_RUN, TEXT_ROWS_PER_RUN)
    groups: dict[int, list[int]] = {}
    for j, t in enumerate(ids):
        groups.setdefault(bucket_length(len(t), bucket), []).append(j)
    for length, members in sorted(groups.items()):
        for s in range(0, len(members), step):
            part = members[s:s + step]
            input_ids, mask = tokenizer.pad([ids[j] for j in part], length)
            yield part, input_ids, mask


def run_audio_graph(session: Any, mel_fusion: np.ndarray, longer: np.ndarray) -> np.ndarray:
    """One call of an exported CLAP audio graph (the encoder's, or a portable bundle's): [B, 512]."""
    feeds = dict(zip(AUDIO_INPUTS, (np.ascontiguousarray(mel_fusion, dtype=np.float32), np.asarray(longer, bool))))
    return session.run([AUDIO_OUTPUT], feeds)[0]


def run_text_graph(session: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """One call of an exported CLAP text graph (the encoder's, or a portable bundle's): [B, 512]."""
    feeds = dict(zip(TEXT_INPUTS, (np.asarray(input_ids, np.int64), np.asarray(attention_mask, np.int64))))
    return session.run([TEXT_OUTPUT], feeds)[0]
