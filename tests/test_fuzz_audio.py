"""Property tests of the audio front end: any file soundfile can write (length, rate, channels, sample format,
content) comes out as a finite [4, 1001, 64] fusion input with the documented length rule, or as an AudioError
naming the file; never another exception, never NaN."""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bst_rt.runtime.audio import (
    CHUNK_FRAMES,
    CLIP_SAMPLES,
    HOP_SAMPLES,
    MEL_BINS,
    SAMPLE_RATE_HZ,
    file_to_mel_fusion,
    length_rule,
    load_audio,
    quantize_int16,
    waveform_to_mel_fusion,
)
from bst_rt.runtime.errors import AudioError

SUBTYPES = {"PCM_U8": 0, "PCM_16": 0, "PCM_24": 0, "PCM_32": 0, "FLOAT": 1, "DOUBLE": 1}  # 1: can hold NaN/inf
CONTENT = ("noise", "silence", "dc", "full-scale", "clipping", "non-finite")


@st.composite
def audio_files(draw):
    """(rate, channels, subtype, content, samples): kept under ~12 s at 48 kHz so an example costs < 0.5 s."""
    # standard rates, any multiple of 50 Hz, and rates sharing almost nothing with 48000 (filtered as their nearest
    # multiple of 50 Hz: a table of millions of phases would be built for them otherwise)
    rate = draw(st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 192000])
                | st.integers(20, 4000).map(lambda k: 50 * k)
                | st.sampled_from([1009, 7919, 44056, 47999, 96001, 191999]))
    channels = draw(st.integers(1, 8))
    subtype = draw(st.sampled_from(sorted(SUBTYPES)))
    content = draw(st.sampled_from(CONTENT))
    max_seconds = 12.0 if channels <= 2 else 3.0
    seconds = draw(st.sampled_from([0.0001, 0.01, 0.5, 9.99, 10.0, 10.01]) | st.floats(0.0, max_seconds))
    n = max(1, int(seconds * rate))
    return rate, channels, subtype, content, n


def _content(kind: str, n: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return (0.3 * rng.standard_normal((n, channels))).astype(np.float32)
    if kind == "silence":
        return np.zeros((n, channels), np.float32)
    if kind == "dc":
        return np.full((n, channels), 0.7, np.float32)
    if kind == "full-scale":
        return np.sign(rng.standard_normal((n, channels))).astype(np.float32)
    if kind == "clipping":
        return (4.0 * rng.standard_normal((n, channels))).astype(np.float32)
    wave = (0.3 * rng.standard_normal((n, channels))).astype(np.float32)
    flat = wave.reshape(-1)
    flat[rng.integers(0, flat.size, size=max(1, flat.size // 50))] = rng.choice([np.nan, np.inf, -np.inf])
    return wave


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audio_files(), st.integers(0, 2**16))
def test_any_wav_becomes_a_finite_fusion_input_with_the_length_rule(spec, seed: int) -> None:
    rate, channels, subtype, content, n = spec
    if content == "non-finite" and not SUBTYPES[subtype]:
        content = "clipping"  # integer formats cannot hold NaN/inf
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        sf.write(path, _content(content, n, channels, seed), rate, subtype=subtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an 'invalid value in cast' warning means NaN reached int16
            wave = load_audio(path)
            mel, longer = file_to_mel_fusion(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape[0] == length_rule(n, rate)  # librosa's float64 length rule
    assert np.isfinite(wave).all() and np.abs(wave).max(initial=0.0) <= 1.0
    assert mel.shape == (4, CHUNK_FRAMES, MEL_BINS) and mel.dtype == np.float32
    assert np.isfinite(mel).all()
    assert longer == (wave.shape[0] > CLIP_SAMPLES and wave.shape[0] // HOP_SAMPLES + 1 > CHUNK_FRAMES)  # laion's rule
    if content == "silence":
        assert mel.max() == pytest.approx(-100.0)  # 10*log10 of the 1e-10 floor: silence stays silence


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30_000), st.sampled_from([np.float64, np.float32, np.float16]), st.integers(0, 2**16),
       st.booleans())
def test_waveform_input_of_any_float_dtype_is_sanitised(n: int, dtype, seed: int, hostile: bool) -> None:
    rng = np.random.default_rng(seed)
    wave = (rng.standard_normal(n) * rng.choice([1e-6, 0.5, 100.0])).astype(dtype)
    if hostile:
        wave[rng.integers(0, n, size=max(1, n // 10))] = rng.choice([np.nan, np.inf, -np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = quantize_int16(wave)
        mel, longer = waveform_to_mel_fusion(wave)
    assert q.dtype == np.int16 and q.shape == wave.shape
    finite = np.isfinite(wave)
    expected = np.clip(wave[finite].astype(np.float32), -1, 1) * np.float32(32767)
    np.testing.assert_array_equal(q[finite], expected.astype(np.int16))  # finite samples: laion's rule exactly
    assert (q[np.isnan(wave)] == 0).all()
    assert mel.shape == (4, CHUNK_FRAMES, MEL_BINS) and np.isfinite(mel).all() and not longer


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=4096), st.sampled_from([b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVEfmt ",
                                                              b"fLaC", b"OggS", b"ID3", b"\xff\xfb"]))
def test_arbitrary_bytes_are_decoded_or_refused_with_the_file_named(payload: bytes, magic: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hostile.wav"
        path.write_bytes(magic + payload)
        try:
            mel, _ = file_to_mel_fusion(path)
        except AudioError as exc:
            assert str(path) in str(exc)
        else:
            assert mel.shape == (4, CHUNK_FRAMES, MEL_BINS) and np.isfinite(mel).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(400_000, 1_500_000), st.sampled_from([16000, 22050, 44100, 48000]), st.integers(1, 2),
       st.integers(40, 600), st.integers(1_000, 60_000), st.integers(3_000, 300_000), st.integers(1, 4000),
       st.integers(0, 2**16))
def test_streaming_fusion_input_is_bit_identical_to_the_whole_waveform_path(
        n48: int, rate: int, channels: int, mel_block: int, margin: int, read_block: int, prealloc: int,
        seed: int) -> None:
    """Small STFT/read blocks, margins and preallocations make a 10-30 s clip cross many streaming block
    boundaries and grow its mel buffer."""
    from bst_rt.runtime import audio

    n = max(1, n48 * rate // SAMPLE_RATE_HZ)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        path = Path(tmp) / "clip.wav"
        sf.write(path, _content("noise", n, channels, seed), rate, subtype="PCM_16")
        mp.setattr(audio, "_MEL_BLOCK_FRAMES", mel_block)
        mp.setattr(audio, "_STREAM_MARGIN_SAMPLES", margin)
        mp.setattr(audio, "_READ_BLOCK_FRAMES", read_block)
        mp.setattr(audio, "_PREALLOC_MAX_FRAMES", prealloc)
        streamed, longer = file_to_mel_fusion(path)
        whole, whole_longer = waveform_to_mel_fusion(audio.decode_int16(path))
    assert longer == whole_longer
    np.testing.assert_array_equal(streamed, whole)
