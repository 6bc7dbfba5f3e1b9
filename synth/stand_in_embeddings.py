"""STAND-IN CLAP embeddings for the synthetic corpus (`bst-train synth --with-features`).

These are not CLAP outputs: the real ones come from `bst-train embed`. They only mimic CLAP's structure so the training
system has real signal to learn from without running a 150 M-parameter model in every test:

- Text: a fixed random unit vector per word (seeded by the word's hash, so the map is the same for every corpus);
  a text's embedding is the normalised sum of its words' vectors. Class-indicative words help, distractors add
  noise, misleading words mislead; empty metadata maps to one constant, uninformative vector. The masked text
  embedding is the same map applied to `mask_class_words(metadata_text(...))`, and the class description
  embeddings apply it to the taxonomy's names and descriptions.
- Audio: per class a centre = parent direction + class direction (that class's description embedding, so audio and
  text share a space as in CLAP) + a private direction; siblings are therefore closer than cross-parent classes.
  An item blends its class centre with a "confuser" class (mostly a sibling) by the same weight its audio was mixed
  with, plus isotropic noise and a few shared nuisance directions (level, room, device). The blend is what makes a
  ~80-90% ceiling plausible: items whose blend weight passes one half look like their confuser.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

from bst_rt.runtime.layout import EMBEDDING_DIM
from bst_rt.runtime.taxonomy import CLASSES, CODES, PARENT_NAMES, PARENTS
from bst_rt.runtime.text import mask_class_words, metadata_text

DIM = EMBEDDING_DIM
EMPTY_TOKEN = "<empty>"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
#: weights of parent, class and private directions in an audio class centre, and per-item noise
PARENT_WEIGHT, CLASS_WEIGHT, PRIVATE_WEIGHT = 1.0, 0.9, 0.7
NOISE_SCALE, NUISANCE_SCALE, N_NUISANCE = 1.1, 0.25, 4


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-12)


@lru_cache(maxsize=65536)
def word_vector(word: str) -> np.ndarray:
    """A fixed unit vector per word, seeded by the word itself (independent of the corpus seed)."""
    seed = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
    v = _unit(np.random.default_rng(seed).standard_normal(DIM))
    v.setflags(write=False)
    return v


def embed_text(text: str) -> np.ndarray:
    """Stand-in text embedding: normalised bag of word vectors (float32 [512], unit norm)."""
    words = _WORD.findall(text.lower()) or [EMPTY_TOKEN]
    return _unit(np.sum([word_vector(w) for w in words], axis=0)).astype(np.float32)


def text_embeddings(title: str, tags: str, description: str) -> tuple[np.ndarray, np.ndarray]:
    """(text, class-word-masked text) stand-in embeddings of one item's metadata, through THE template."""
    text = metadata_text(title, tags, description)
    return embed_text(text), embed_text(mask_class_words(text))


def class_text_embeddings() -> np.ndarray:
    """[23, 512] stand-in embedding of each class's name and description, in label order."""
    return np.stack([embed_text(f"{c.name}. {c.description}") for c in CLASSES])


class AudioSpace:
    """Class centres and nuisance directions of the stand-in audio embedding space for one corpus seed."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 0xA0D10])
        class_text = class_text_embeddings().astype(np.float64)
        parent_dir = {
            p: _unit(embed_text(PARENT_NAMES[p]) + class_text[[c.parent == p for c in CLASSES]].mean(axis=0))
            for p in PARENTS
        }
        private = _unit(rng.standard_normal((len(CODES) + len(PARENTS), DIM)))
        centres = {}
        for i, c in enumerate(CLASSES):
            centres[c.code] = _unit(
                PARENT_WEIGHT * parent_dir[c.parent] + CLASS_WEIGHT * class_text[i] + PRIVATE_WEIGHT * private[i]
            )
        for j, p in enumerate(PARENTS):  # *-other: the parent direction and its own private part, no class part
            centres[f"{p}-other"] = _unit(PARENT_WEIGHT * parent_dir[p] + PRIVATE_WEIGHT * private[len(CODES) + j])
        self.centres: dict[str, np.ndarray] = centres
        self.nuisance = _unit(rng.standard_normal((N_NUISANCE, DIM)))

    def embed(self, rng: np.random.Generator, code: str, confuser: str | None, mix: float) -> np.ndarray:
        """One item's stand-in audio embedding (float32 [512], unit norm)."""
        x = self.centres[code] * (1.0 - mix)
        if confuser is not None:
            x = x + mix * self.centres[confuser]
        x = x + NOISE_SCALE * rng.standard_normal(DIM) / np.sqrt(DIM)
        x = x + NUISANCE_SCALE * rng.standard_normal(N_NUISANCE) @ self.nuisance
        return _unit(x).astype(np.float32)
