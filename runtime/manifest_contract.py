"""What a manifest records and this runtime implements must agree, or the bundle is refused before any session opens.

A bundle exported by another version of bst-rt could be hash-perfect and still be read wrongly: a different text
template, mel front end, chunk rule, candidate-feature order or tokenizer would give plausible, wrong predictions.
`check_manifest_contract` compares every such field with this runtime's constants and refuses the first mismatch in
one line that names the field, both values and the fix. The value types of every field are checked as the manifest
is parsed (`bst_rt.runtime.manifest`); `manifest_json_schema` publishes the same typing for deployers in other languages.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import audio
from .errors import BundleError
from .candidate_features import FEATURE_NAMES
from .manifest import MANIFEST_NAME, Manifest
from .text import MAX_TOKENS, TEMPLATE_VERSION

#: the mel front end this runtime computes (runtime/audio.py), as export records it in `audio.mel`
RUNTIME_MEL: dict[str, Any] = {
    "n_fft": audio.N_FFT, "hop_samples": audio.HOP_SAMPLES, "mel_bins": audio.MEL_BINS,
    "f_min_hz": audio.F_MIN_HZ, "f_max_hz": audio.F_MAX_HZ, "chunk_frames": audio.CHUNK_FRAMES,
}
#: the tokenizer.json layout runtime/tokenizer.py implements: byte-level BPE with RoBERTa's <s> ... </s> framing
TOKENIZER_MODEL = "BPE"
TOKENIZER_PRE = "ByteLevel"
TOKENIZER_POST = "RobertaProcessing"
_FIX = "re-export the bundle with this bst-rt's `bst-train export`, or install the bst-rt version that wrote it"


def _refuse(source: str, field: str, found: Any, expected: Any) -> None:
    raise BundleError(f"{source}: {field} is {found!r}, this bst-rt implements {expected!r}; {_FIX}")


def check_manifest_contract(manifest: Manifest, root: Path) -> None:
    """Refuse a bundle whose recorded text, audio, feature or tokenizer contract differs from this runtime's."""
    source = str(Path(root) / MANIFEST_NAME)
    expected = {
        "text.template_version": (manifest.text.template_version, TEMPLATE_VERSION),
        "text.max_tokens": (manifest.text.max_tokens, MAX_TOKENS),
        "audio.sample_rate_hz": (manifest.audio.sample_rate_hz, audio.SAMPLE_RATE_HZ),
        "audio.clip_samples": (manifest.audio.clip_samples, audio.CLIP_SAMPLES),
        "audio.chunk_rule": (manifest.audio.chunk_rule, audio.CHUNK_RULE),
    }
    for field, (found, want) in expected.items():
        if found != want:
            _refuse(source, field, found, want)
    for key, want in RUNTIME_MEL.items():
        if key not in manifest.audio.mel or manifest.audio.mel[key] != want:
            _refuse(source, f"audio.mel.{key}", manifest.audio.mel.get(key), want)
    unknown_mel = sorted(set(manifest.audio.mel) - set(RUNTIME_MEL))
    if unknown_mel:
        _refuse(source, "audio.mel", f"keys {unknown_mel}", f"keys {sorted(RUNTIME_MEL)}")
    if manifest.ranker:
        names = manifest.ranker.get("feature_names")
        if list(names or []) != list(FEATURE_NAMES):
            _refuse(source, "ranker.feature_names", names, list(FEATURE_NAMES))
    check_tokenizer_file(Path(root) / manifest.text.tokenizer_file)


def check_tokenizer_file(path: Path) -> None:
    """tokenizer.json must be the byte-level BPE + RoBERTa post-processor that laion-clap's text tower was fed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not a readable tokenizers JSON file ({exc}); {_FIX}") from None
    parts = {
        "model.type": ((data.get("model") or {}).get("type"), TOKENIZER_MODEL),
        "pre_tokenizer.type": ((data.get("pre_tokenizer") or {}).get("type"), TOKENIZER_PRE),
        "post_processor.type": ((data.get("post_processor") or {}).get("type"), TOKENIZER_POST),
    }
    for field, (found, want) in parts.items():
        if found != want:
            _refuse(str(path), field, found, want)
    vocab = (data.get("model") or {}).get("vocab") or {}
    added = {t.get("content") for t in data.get("added_tokens") or []}
    if "<pad>" not in vocab and "<pad>" not in added:
        raise BundleError(f"{path}: tokenizer has no <pad> token; {_FIX}")
