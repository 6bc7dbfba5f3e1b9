"""RoBERTa-style tokenisation with the `tokenizers` library (no transformers): ids identical to laion-clap's.

The tokenizer.json written by `bst_rt.export.clap.save_tokenizer` holds byte-level BPE, the RoBERTa post-processor
(`<s> ... </s>`) and truncation at 77 tokens. Padding is to the batch's longest text, not to 77: the text graph
reads the pooled first token, so the embedding is the same at a fraction of the compute.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import BundleError
from .text import MAX_TOKENS

#: texts are cut to this many characters before tokenising: the first 77 tokens come from far fewer (the cut can
#: only change them inside a single 16k-character word), and a hostile 1 MB description otherwise costs seconds
MAX_TEXT_CHARS = 16_384


class Tokenizer:
    """`encode_batch(texts) -> (input_ids, attention_mask)`, both int64 [B, longest]."""

    def __init__(self, tokenizer: Any, pad_id: int) -> None:
        self._tok = tokenizer
        self.pad_id = pad_id
        self._tok.no_padding()
        self._tok.enable_truncation(MAX_TOKENS)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        from tokenizers import Tokenizer as HfTokenizer

        path = Path(path)
        try:
            tok = HfTokenizer.from_file(str(path))
        except Exception as exc:
            raise BundleError(f"{path}: not a tokenizers JSON file ({exc})") from None
        pad_id = tok.token_to_id("<pad>")
        if pad_id is None:
            raise BundleError(f"{path}: tokenizer has no <pad> token")
        return cls(tok, pad_id)

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.pad(self.token_ids(texts))

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, unpadded (at most `MAX_TOKENS`)."""
        return [e.ids for e in self._tok.encode_batch([str(t)[:MAX_TEXT_CHARS] for t in texts])]

    def pad(self, token_ids: Sequence[Sequence[int]], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) padded to `length` (default: the longest of `token_ids`)."""
        longest = max((len(t) for t in token_ids), default=0) if length is None else length
        ids = np.full((len(token_ids), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), longest), dtype=np.int64)
        for i, t in enumerate(token_ids):
            ids[i, :len(t)] = t
            mask[i, :len(t)] = 1
        return ids, mask
