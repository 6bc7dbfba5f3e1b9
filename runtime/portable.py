"""The portable contract: the bundle's graphs in run order, so a client needs only onnxruntime, the manifest and
tokenizer.json (docs/portable.md). This module names the graphs, writes the manifest's `portable` section, and runs
the chain graph by graph (`PortableChain`) so a test can prove that the graph-only path and the numpy runtime agree.

Torch-free like the rest of `bst_rt.runtime`: onnxruntime sessions only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .audio import SAMPLE_RATE_HZ, SOURCE_RATE_RANGE_HZ
from .bundle import Bundle
from .errors import BundleError
from .layout import EMBEDDING_DIM, HEADS_INPUTS, HEADS_OUTPUTS, PORTABLE_CONTRACT
from .encoders import AUDIO_INPUTS, TEXT_INPUTS, run_audio_graph, run_text_graph, token_bucket_calls
from . import resample as resample_design
from .resample import RESAMPLER
from .session import make_session
from .text import CLASS_WORDS, MAX_TOKENS, TEMPLATE_VERSION, mask_class_words
from .tokenizer import MAX_TEXT_CHARS, Tokenizer


CONTRACT = PORTABLE_CONTRACT
RESAMPLE_GRAPH = "resample"
RESAMPLE_FILE = "resample.onnx"
FRONTEND_GRAPH = "frontend"
FRONTEND_FILE = "frontend.onnx"
#: characters `mask_class_words` strips from both ends of a word before looking it up
MASK_STRIP_CHARS = ".,;:!?()\"'"


def decision_graph(system: int | str) -> str:
    """Manifest graph name of a system's decision graph (file: the same name + .onnx)."""
    return f"decision_system_{system}"


def portable_section(systems: Sequence[str], heads_inputs: Sequence[str]) -> dict:
    """The manifest's `portable` object: what the caller does, then which graph to run with which feeds."""
    return {
        "contract": CONTRACT,
        "doc": "docs/portable.md",
        "caller_audio": {
            "decode": "the file's samples as float32 in [-1, 1] (16-bit PCM: sample / 32768, as libsndfile does)",
            "mono": "mean over channels, in float32",
            "non_finite": "NaN -> 0, +inf -> 1, -inf -> -1",
            "source_rate_hz": list(SOURCE_RATE_RANGE_HZ),
            "resample": f"inside the {RESAMPLE_GRAPH} graph ({RESAMPLER}); feed the file's own rate",
            "design_rate": {"rule": "g = gcd(48000, rate); k = max(1, ceil(min_hop / (rate / g))); L = k * 48000 / g;"
                                    " M = k * rate / g; pad = ceil(half_width / min(1, 48000 / rate));"
                                    " W = M * ceil(((L - 1) * M // L + 2 * pad + 2) / M); if L * W > max_table the"
                                    " graph filters the rate as its nearest multiple of step_hz (inside the graph:"
                                    " feed the file's own rate; nothing is refused)",
                            "half_width": resample_design.HALF_WIDTH, "min_hop": resample_design.MIN_HOP,
                            "max_table": resample_design.MAX_TABLE, "step_hz": resample_design.FALLBACK_STEP_HZ},
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "int16_round_trip": "inside the frontend graph (idempotent: a caller may also do it)",
            "no_audio": "missing, empty or undecodable audio: skip frontend and audio_encoder; audio_present = false,"
                        " audio_embedding = zeros",
        },
        "caller_text": {
            "template_version": TEMPLATE_VERSION,
            "template": "'. '.join of the non-empty parts: title; tags with commas as spaces; description with"
                        " HTML stripped; whitespace runs collapsed to one space, ends trimmed",
            "tokenizer_file": "tokenizer.json",
            "truncate_chars": MAX_TEXT_CHARS,
            "max_tokens": MAX_TOKENS,
            "padding": "none: each text runs at its exact token count (attention_mask all 1); texts of one count"
                       " may share a call, so a text's embedding never depends on the texts beside it",
            "masked_text": {"rule": "split on ' ', drop words whose lower-case form stripped of these characters"
                                    " is a class word, re-join with ' '", "strip_chars": MASK_STRIP_CHARS,
                            "class_words": sorted(CLASS_WORDS)},
            "no_text": "empty template: skip the text encoder; text_present = false, embeddings = zeros",
        },
        "steps": [
            {"graph": RESAMPLE_GRAPH, "per": "clip",
             "feeds": {"waveform": "caller_audio: mono float32 [samples] at the file's own rate",
                       "sample_rate": "int64 scalar: the file's rate in Hz"}},
            {"graph": FRONTEND_GRAPH, "per": "clip",
             "feeds": {"waveform": "resample.waveform_48k", "length": "int64 scalar: its sample count"}},
            {"graph": "audio_encoder", "per": "batch",
             "feeds": dict(zip(AUDIO_INPUTS, ("frontend.mel_fusion, clips concatenated on axis 0",
                                              "frontend.longer, concatenated")))},
            {"graph": "text_encoder", "per": "batch", "runs": ["text", "masked_text"],
             "feeds": dict(zip(TEXT_INPUTS, ("caller_text tokens", "caller_text mask")))},
            {"graph": "heads", "per": "batch",
             "feeds": {name: f"{name} [batch, {EMBEDDING_DIM}] (zeros for a missing modality)" for name in heads_inputs}},
            {"graph": "decision_system_<N>", "per": "batch",
             "feeds": {"family_probs": "heads.family_probs", "pool_probs": "heads.pool_probs",
                       "text_embedding": "text_encoder output on the text (zeros without text)",
                       "audio_present": "bool [batch]", "text_present": "bool [batch]"},
             "outputs": {"label": "index into manifest.classes", "score": "float64 in [0, 1]; CSV: 6 decimals"}},
        ],
        "decision_graphs": {str(s): decision_graph(s) for s in systems},
    }


class PortableChain:
    """A bundle's graphs run as a foreign client would run them (no numpy front end, features or policy code)."""

    def __init__(self, bundle: Bundle, system: int, threads: int | None = 1) -> None:
        m = bundle.manifest
        if not getattr(m, "portable", None):
            raise BundleError(f"{bundle.root}: no portable graphs in this bundle (re-export with this bst-train export)")
        run = lambda name: make_session(bundle.path(bundle.graph(name).file), provider="cpu", threads=threads)
        self.resample = run(RESAMPLE_GRAPH)
        self.frontend = run(FRONTEND_GRAPH)
        self.audio = run("audio_encoder")
        self.text = run("text_encoder")
        self.heads = run("heads")
        self.decision = run(decision_graph(system))
        self.tokenizer = Tokenizer.from_file(bundle.path(m.text.tokenizer_file))
        self._heads_inputs = [i.name for i in self.heads.get_inputs()]
        self._decision_inputs = {i.name for i in self.decision.get_inputs()}

    def to_48k(self, wave: np.ndarray, rate: int) -> np.ndarray:
        """Mono samples at `rate` -> 48 kHz, through the bundle's resample graph."""
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        return self.resample.run(None, {"waveform": wave, "sample_rate": np.array(rate, np.int64)})[0]

    def mel(self, wave: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        """One mono waveform at `rate` -> (mel_fusion [1, 4, 1001, 64], longer [1])."""
        wave = self.to_48k(wave, rate)
        return tuple(self.frontend.run(None, {"waveform": wave, "length": np.array(wave.shape[0], np.int64)}))

    def _text(self, texts: list[str]) -> np.ndarray:
        """Each text at its exact token count, texts of one count in one call (the contract's text rule)."""
        out = np.zeros((len(texts), EMBEDDING_DIM), np.float32)
        for rows, ids, mask in token_bucket_calls(self.tokenizer.token_ids(texts), self.tokenizer, bucket=1):
            out[rows] = run_text_graph(self.text, ids, mask)
        return out

    def predict(self, waves: Sequence[tuple[np.ndarray, int] | None],
                texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(label index [n], score [n]) for n items; `waves[i]` is (mono samples, their rate) as decoded, None for
        missing audio; '' is empty metadata."""
        n = len(texts)
        audio = np.zeros((n, EMBEDDING_DIM), np.float32)
        have = [i for i in range(n) if waves[i] is not None and len(waves[i][0]) > 0]
        if have:
            mels = [self.mel(*waves[i]) for i in have]
            audio[have] = run_audio_graph(self.audio, np.concatenate([m for m, _ in mels]),
                                          np.concatenate([lg for _, lg in mels]))
        text, masked = np.zeros((n, EMBEDDING_DIM), np.float32), np.zeros((n, EMBEDDING_DIM), np.float32)
        idx = [i for i in range(n) if texts[i]]
        if idx:
            both = self._text([texts[i] for i in idx] + [mask_class_words(texts[i]) for i in idx])
            text[idx], masked[idx] = both[: len(idx)], both[len(idx):]
        feeds = dict(zip(HEADS_INPUTS, (audio, text, masked)))
        fam, pool = self.heads.run(list(HEADS_OUTPUTS), {k: feeds[k] for k in self._heads_inputs})
        dfeeds = {"family_probs": fam, "pool_probs": pool, "text_embedding": text,
                  "audio_present": np.array([i in have for i in range(n)]),
                  "text_present": np.array([bool(t) for t in texts])}
        label, score = self.decision.run(None, {k: v for k, v in dfeeds.items() if k in self._decision_inputs})
        return label, score
