"""CLAP audio and text encoders on onnxruntime: the numpy front end / tokenizer, then the exported graphs.

I/O names (stable; a change is a bundle schema bump): audio `mel_fusion` [batch, 4, 1001, 64] float32 and
`longer` [batch] bool -> `audio_embedding` [batch, 512]; text `input_ids`, `attention_mask` [batch, tokens]
int64 -> `text_embedding` [batch, 512]. Embeddings come out L2-normalised.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from .audio import file_to_mel_fusion, waveforms_to_mel_fusion
from .layout import EMBEDDING_DIM  # noqa: F401 (re-exported: the encoders' output width)
from .session import Providers, make_session, session_provider
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
#: the whole tensor), so rows sharing a call move each other's embeddings (up to 1.8e-3 abs measured on an audio
#: embedding, a batch of 4 vs each alone): they are run one item per call. fp32 graphs are bit-identical batched.
INT8_ROWS_PER_RUN = 1


class AudioEncoder:
    """Waveforms or files -> [B, 512]; batches are run as given (the caller picks the batch size), at most
    `rows_per_run` clips per graph call (`INT8_ROWS_PER_RUN` for an int8 graph; None: the whole batch)."""

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
        parts = [self.session.run([AUDIO_OUTPUT], {
            "mel_fusion": np.ascontiguousarray(mel_fusion[s:s + step], dtype=np.float32),
            "longer": np.asarray(longer[s:s + step], dtype=bool)})[0] for s in range(0, n, step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def embed_waveforms(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """48 kHz mono waveforms (any length; quantised here exactly as laion-clap does)."""
        return self.embed_mel(*waveforms_to_mel_fusion(waveforms))

    def embed_files(self, paths: Iterable[str | os.PathLike]) -> np.ndarray:
        items = [file_to_mel_fusion(p) for p in paths]
        if not items:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return self.embed_mel(np.stack([m for m, _ in items]), np.array([lg for _, lg in items]))


class TextEncoder:
    """Texts -> [B, 512], padded to the longest text of each graph call; at most `rows_per_run` texts a call
    (`INT8_ROWS_PER_RUN` for an int8 graph, each text then at its exact token count; None: the whole batch)."""

    def __init__(self, graph_path: str | os.PathLike, tokenizer_path: str | os.PathLike,
                 provider: Providers = "cpu", threads: int | None = None, rows_per_run: int | None = None):
        self.session = make_session(graph_path, provider, threads)
        self.provider = session_provider(self.session)
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.rows_per_run = rows_per_run

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        step = self.rows_per_run or len(texts)
        parts = []
        for s in range(0, len(texts), step):
            ids, mask = self.tokenizer.encode_batch(texts[s:s + step])
            parts.append(self.session.run([TEXT_OUTPUT], {"input_ids": ids, "attention_mask": mask})[0])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
