"""Audio front end of the CLAP fusion encoder, in numpy: what laion-clap does between a file and `mel_fusion`.

decode (soundfile, in blocks) -> mono (channel mean) -> soxr HQ to 48 kHz with librosa's length rule
(`ceil(n * 48000 / sr)`) -> int16 round trip -> repeat-pad to 10 s, or, for longer clips, the fusion input:
the whole-clip mel shrunk to 1001 frames (antialiased bilinear, as torchvision's Resize) plus three 1001-frame
chunks picked by `CHUNK_RULE`. laion-clap picks the chunks at random; a deployable pipeline must not, so the
torch reference (`bst.train.clap`) patches laion's choice to this same rule.

Memory bound for long files: the decoded 48 kHz waveform is kept as int16 (lossless after the round trip,
96 KB per second) and the whole-clip mel as float32 (25.6 KB per second): about 0.42 GB per hour of audio,
0.84 GB for a 2-hour clip. The source file itself is read in blocks and never held whole.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import AudioError

SAMPLE_RATE_HZ = 48000
CLIP_SAMPLES = 480000
CLIP_SECONDS = CLIP_SAMPLES / SAMPLE_RATE_HZ
N_FFT = 1024
HOP_SAMPLES = 480
MEL_BINS = 64
F_MIN_HZ = 50.0
F_MAX_HZ = 14000.0
CHUNK_FRAMES = CLIP_SAMPLES // HOP_SAMPLES + 1  # 1001
#: which 1001-frame chunks a clip longer than 10 s contributes: the middle start of each third of the start range
CHUNK_RULE = "centre-of-thirds"
INT16_SCALE = 32767.0
_READ_BLOCK_FRAMES = 1 << 20
_MEL_BLOCK_FRAMES = 4096


# ---------------------------------------------------------------------------------------------- decoding
def _resample_stream(source_rate: int):
    import soxr

    return soxr.ResampleStream(source_rate, SAMPLE_RATE_HZ, 1, dtype="float32", quality="HQ")


def quantize_int16(wave: np.ndarray) -> np.ndarray:
    """laion-clap's `float32_to_int16`: clip to [-1, 1], x32767 in float32, truncate toward zero."""
    return (np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0) * np.float32(INT16_SCALE)).astype(np.int16)


def int16_to_float(wave: np.ndarray) -> np.ndarray:
    """laion-clap's `int16_to_float32` (division in float64, then float32)."""
    return (wave / INT16_SCALE).astype(np.float32)


def int16_round_trip(wave: np.ndarray) -> np.ndarray:
    """Idempotent: a waveform that has been through it once comes back unchanged."""
    return int16_to_float(quantize_int16(wave))


def _decode_int16(path: Path) -> np.ndarray:
    """The 48 kHz mono waveform after the int16 round trip, kept as int16 (see the memory bound above)."""
    import soundfile as sf

    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as snd:
            rate = int(snd.samplerate)
            stream = None if rate == SAMPLE_RATE_HZ else _resample_stream(rate)
            parts: list[np.ndarray] = []
            n_in = 0
            while True:
                block = snd.read(_READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
                last = block.shape[0] < _READ_BLOCK_FRAMES
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                n_in += mono.shape[0]
                out = mono if stream is None else stream.resample_chunk(np.ascontiguousarray(mono), last=last)
                if out.size:
                    parts.append(quantize_int16(out))
                if last:
                    break
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError for bad input
        raise AudioError(f"{path}: cannot decode audio ({type(exc).__name__}: {exc})") from None
    if n_in == 0:
        raise AudioError(f"{path}: no audio samples (empty stream)")
    wave = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    n_out = math.ceil(n_in * SAMPLE_RATE_HZ / rate)  # librosa's length rule (util.fix_length)
    if wave.shape[0] >= n_out:
        return wave[:n_out]
    return np.concatenate([wave, np.zeros(n_out - wave.shape[0], dtype=np.int16)])


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """float32 mono 48 kHz waveform after the int16 round trip, as laion-clap would see it."""
    return int16_to_float(_decode_int16(Path(path)))


# ---------------------------------------------------------------------------------------------- mel
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """[513, 64] HTK triangles 50-14000 Hz without area normalisation (torchaudio's melscale_fbanks)."""
    freqs = np.linspace(0, SAMPLE_RATE_HZ // 2, N_FFT // 2 + 1)
    m_pts = np.linspace(_hz_to_mel(np.float64(F_MIN_HZ)), _hz_to_mel(np.float64(F_MAX_HZ)), MEL_BINS + 2)
    f_pts = _mel_to_hz(m_pts)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic


def log_mel(wave: np.ndarray) -> np.ndarray:
    """[T, 64] float32 log-mel (dB), T = n // 480 + 1: centred STFT, reflect padding, power 2, 10*log10(max(p, 1e-10))."""
    x = np.asarray(wave)
    if x.shape[0] <= N_FFT // 2:
        raise AudioError(f"waveform of {x.shape[0]} samples is too short for a {N_FFT}-point centred STFT")
    half = N_FFT // 2
    n_frames = x.shape[0] // HOP_SAMPLES + 1
    out = np.empty((n_frames, MEL_BINS), dtype=np.float32)
    fb, window = mel_filterbank(), _hann()
    for t0 in range(0, n_frames, _MEL_BLOCK_FRAMES):
        t1 = min(t0 + _MEL_BLOCK_FRAMES, n_frames)
        lo, hi = t0 * HOP_SAMPLES - half, (t1 - 1) * HOP_SAMPLES + half
        seg = x[max(lo, 0):min(hi, x.shape[0])].astype(np.float64)
        if x.dtype == np.int16:
            seg = (seg / INT16_SCALE).astype(np.float32).astype(np.float64)
        if lo < 0:
            seg = np.concatenate([seg[1:1 - lo][::-1], seg])
        if hi > x.shape[0]:
            seg = np.concatenate([seg, seg[-1 - (hi - x.shape[0]):-1][::-1]])
        frames = np.lib.stride_tricks.sliding_window_view(seg, N_FFT)[::HOP_SAMPLES]
        power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
        out[t0:t1] = 10.0 * np.log10(np.maximum(power @ fb, 1e-10))
    return out


def shrink_frames(mel: np.ndarray, frames: int = CHUNK_FRAMES) -> np.ndarray:
    """Antialiased bilinear resize along time to `frames` rows (torch's `interpolate(antialias=True)` weights).

    Computed one output row at a time from the few input rows it reads, so a 2-hour mel needs no dense matrix.
    """
    n_in = mel.shape[0]
    scale = n_in / frames
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    out = np.empty((frames, mel.shape[1]), dtype=np.float32)
    for i in range(frames):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        w = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - centre + 0.5) * inv))
        w /= w.sum()
        out[i] = w @ mel[lo:hi].astype(np.float64)
    return out


def chunk_starts(total_frames: int, chunk_frames: int = CHUNK_FRAMES) -> tuple[int, int, int]:
    """`CHUNK_RULE`: laion's three thirds of the valid start range, taking the middle element of each."""
    thirds = np.array_split(np.arange(0, total_frames - chunk_frames + 1), 3)
    return tuple(int(t[len(t) // 2]) if len(t) else 0 for t in thirds)  # type: ignore[return-value]


def repeat_pad(wave: np.ndarray) -> np.ndarray:
    """laion's 'repeatpad': tile floor(480000 / n) times, then zero-pad to exactly 480000 samples."""
    n = wave.shape[0]
    if n == 0:
        raise AudioError("empty waveform (0 samples)")
    tiled = np.tile(wave, CLIP_SAMPLES // n)
    return np.concatenate([tiled, np.zeros(CLIP_SAMPLES - tiled.shape[0], dtype=wave.dtype)])


def waveform_to_mel_fusion(wave: np.ndarray) -> tuple[np.ndarray, bool]:
    """([4, 1001, 64] float32, longer) for one 48 kHz mono waveform (float32 or int16 after the round trip)."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AudioError(f"expected a mono waveform, got shape {wave.shape}")
    if wave.dtype != np.int16:
        wave = int16_round_trip(wave)
    if wave.shape[0] <= CLIP_SAMPLES:
        mel = log_mel(repeat_pad(wave))
        return np.stack([mel] * 4), False
    mel = log_mel(wave)
    if mel.shape[0] == CHUNK_FRAMES:
        return np.stack([mel] * 4), False
    chunks = [mel[s:s + CHUNK_FRAMES] for s in chunk_starts(mel.shape[0])]
    return np.stack([shrink_frames(mel)] + chunks), True


def waveforms_to_mel_fusion(waves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Batch helper: (mel_fusion [B, 4, 1001, 64] float32, longer [B] bool)."""
    items = [waveform_to_mel_fusion(w) for w in waves]
    mels = np.stack([m for m, _ in items]) if items else np.zeros((0, 4, CHUNK_FRAMES, MEL_BINS), np.float32)
    return mels, np.array([lg for _, lg in items], dtype=bool)


def file_to_mel_fusion(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """Decode and featurise one file, keeping the waveform as int16 (the bounded-memory path)."""
    return waveform_to_mel_fusion(_decode_int16(Path(path)))
