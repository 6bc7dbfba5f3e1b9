"""Audio front end of the CLAP fusion encoder, in numpy: what laion-clap does between a file and `mel_fusion`.

decode (soundfile, in blocks) -> mono (channel mean) -> 48 kHz by the bundle's resampler design
(`bst_rt.runtime.resample`, the same math as the portable `resample` graph, so every client resamples alike; 48 kHz
passes through) with librosa's length rule (`ceil(n * 48000 / sr)`) -> int16 round trip -> repeat-pad to 10 s, or, for longer clips, the fusion input:
the whole-clip mel shrunk to 1001 frames (antialiased bilinear, as torchvision's Resize) plus three 1001-frame
chunks picked by `CHUNK_RULE`. laion-clap picks the chunks at random; a deployable pipeline must not, so the
torch reference (`bst_rt.train.clap`) patches laion's choice to this same rule.

Memory bound for long files: `file_to_mel_fusion` streams. The file is read in blocks of at most
`_READ_BLOCK_SAMPLES` samples (whatever the channel count), resampled and quantised block by block, and fed to a
streaming log-mel that keeps only the samples its next STFT block needs; what stays is the whole-clip mel as
float32 (25.6 KB per second, 92 MB per hour): the chunk rule needs the clip's length, known only at the end.
The result is identical to `waveform_to_mel_fusion(decode_int16(path))` (same STFT blocks, same arithmetic).
`load_audio`/`decode_int16` return the whole waveform and so grow with it (int16: 0.35 GB per hour).

Hostile input: samples that are NaN become 0 and +-inf become +-1 before resampling (so one bad sample cannot
smear NaN over the resampler's filter length); a header rate outside `SOURCE_RATE_RANGE_HZ` is refused (a 1 Hz
header would make 48000 output samples of every input sample).

In-memory audio (`samples_to_mel_fusion`, behind `Predictor.predict_waveform`) goes through the same block loop
as a file, so both give bit-identical fusion inputs. Decode, streaming mel and chunk rule live together because
they are one contract with laion-clap whose pieces must change together.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import AudioError
from . import resample as resample_design
from .resample import StreamResampler

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
#: sample rates a file may declare (1 kHz to 768 kHz); outside it, AudioError
SOURCE_RATE_RANGE_HZ = (1000, 768000)
_READ_BLOCK_FRAMES = 1 << 20
_READ_BLOCK_SAMPLES = 1 << 21  # at most per read, all channels together (8 MB of float32)
_MEL_BLOCK_FRAMES = 4096
#: the streaming mel computes a block only once this many samples beyond it have been decoded, so the final
#: length fix (pad or trim to the length rule, a few samples at most) can never touch samples already used
_STREAM_MARGIN_SAMPLES = SAMPLE_RATE_HZ
#: the streaming mel is preallocated from the header's length up to this many frames (3 h), then grown
_PREALLOC_MAX_FRAMES = 3 * 3600 * SAMPLE_RATE_HZ // HOP_SAMPLES


# ---------------------------------------------------------------------------------------------- decoding
def _resample_stream(source_rate: int) -> StreamResampler:
    return StreamResampler(source_rate)


def quantize_int16(wave: np.ndarray) -> np.ndarray:
    """laion-clap's `float32_to_int16`: clip to [-1, 1], x32767 in float32, truncate toward zero (NaN -> 0)."""
    x = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, copy=x is wave, nan=0.0)
    return (x * np.float32(INT16_SCALE)).astype(np.int16)


def int16_to_float(wave: np.ndarray) -> np.ndarray:
    """laion-clap's `int16_to_float32` (division in float64, then float32)."""
    return (wave / INT16_SCALE).astype(np.float32)


def int16_round_trip(wave: np.ndarray) -> np.ndarray:
    """Idempotent: a waveform that has been through it once comes back unchanged."""
    return int16_to_float(quantize_int16(wave))


def _check_rate(rate: int, where: str) -> None:
    lo, hi = SOURCE_RATE_RANGE_HZ
    if not lo <= rate <= hi:
        raise AudioError(f"{where}: sample rate {rate} Hz is outside the supported {lo}-{hi} Hz")


def _blocks_to_int16(blocks: Iterable[np.ndarray], block_frames: int, rate: int,
                     sink: Callable[[np.ndarray], None]) -> int:
    """Float32 [frames, channels] blocks of `block_frames` (the last one shorter, possibly empty) -> 48 kHz mono
    int16 pieces passed to `sink`; returns the input frame count. Files and in-memory waveforms both go through
    here, so the same samples give the same pieces whichever way they arrive."""
    stream = None if rate == SAMPLE_RATE_HZ else _resample_stream(rate)
    n_in = 0
    for block in blocks:
        last = block.shape[0] < block_frames
        if not np.isfinite(block).all():  # NaN -> 0, +-inf -> +-1 before any arithmetic spreads them
            block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
        mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        n_in += mono.shape[0]
        out = mono if stream is None else stream.feed(mono, last=last)
        if out.size:
            sink(quantize_int16(out))
        if last:
            break
    return n_in


def _block_frames(channels: int) -> int:
    return max(1, min(_READ_BLOCK_FRAMES, _READ_BLOCK_SAMPLES // max(1, channels)))


def _decode_blocks(path: Path, sink: Callable[[np.ndarray], None],
                   expect: Callable[[int], None] | None = None) -> int:
    """Decode `path` block by block, passing 48 kHz mono int16 pieces to `sink`; returns the length rule's count
    (`ceil(n * 48000 / sr)`, librosa's util.fix_length) that the pieces must be padded or trimmed to. `expect` is
    told the length the header announces (a hint only: headers lie)."""
    import soundfile as sf

    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as snd:
            rate = int(snd.samplerate)
            _check_rate(rate, str(path))
            block_frames = _block_frames(snd.channels)
            if expect is not None and snd.frames > 0:
                expect(length_rule(snd.frames, rate))
            reads = (snd.read(block_frames, dtype="float32", always_2d=True) for _ in iter(int, 1))
            n_in = _blocks_to_int16(reads, block_frames, rate, sink)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError for bad input
        raise AudioError(f"{path}: cannot decode audio ({type(exc).__name__}: {exc})") from None
    if n_in == 0:
        raise AudioError(f"{path}: no audio samples (empty stream)")
    return length_rule(n_in, rate)


def samples_to_mel_fusion(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, bool]:
    """The fusion input of audio already in memory: `samples` [frames] (mono) or [frames, channels] as soundfile
    returns it, any numeric dtype (integers are scaled to [-1, 1] as libsndfile does), any supported rate. It takes
    the very path a file takes (channel mean, block-wise resampling, int16 round trip, streaming mel), so a waveform and
    the same samples written to a float WAV give the same `mel_fusion`."""
    wave = np.asarray(samples)
    if wave.ndim == 1:
        wave = wave[:, None]
    if wave.ndim != 2 or wave.shape[1] == 0:
        raise AudioError(f"expected samples shaped [frames] or [frames, channels], got shape {wave.shape}")
    if wave.shape[0] == 0:
        raise AudioError("empty waveform (0 samples)")
    if np.issubdtype(wave.dtype, np.integer):
        wave = wave.astype(np.float64) / float(2 ** (8 * wave.dtype.itemsize - 1))
    elif not np.issubdtype(wave.dtype, np.floating):
        raise AudioError(f"expected numeric samples, got dtype {wave.dtype}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    _check_rate(int(sample_rate), "waveform")
    wave = wave.astype(np.float32, copy=False)
    block_frames = _block_frames(wave.shape[1])
    blocks = (wave[s:s + block_frames] for s in range(0, wave.shape[0] + 1, block_frames))
    mel = _StreamingLogMel()
    mel.expect(length_rule(wave.shape[0], int(sample_rate)))
    n_in = _blocks_to_int16(blocks, block_frames, int(sample_rate), mel.feed)
    return mel.finish(length_rule(n_in, int(sample_rate)))


def length_rule(n: int, source_rate_hz: int) -> int:
    """librosa's resampled length, `ceil(n * (48000 / sr))` in float64 as librosa computes it: the float ratio
    sometimes lands a hair above an integer (327222 samples at 22.05 kHz -> 712321, not 712320); at the
    resampler's design rate (`resample.design_rate`: the rate itself, but for rates with a huge phase table)."""
    return resample_design.output_length(n, source_rate_hz)


def _fix_length(wave: np.ndarray, n: int) -> np.ndarray:
    if wave.shape[0] >= n:
        return wave[:n]
    return np.concatenate([wave, np.zeros(n - wave.shape[0], dtype=wave.dtype)])


def decode_int16(path: str | os.PathLike) -> np.ndarray:
    """The 48 kHz mono waveform after the int16 round trip, kept as int16 (the whole clip: 0.35 GB per hour)."""
    parts: list[np.ndarray] = []
    n_out = _decode_blocks(Path(path), parts.append)
    return _fix_length(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16), n_out)



def load_audio(path: str | os.PathLike) -> np.ndarray:
    """float32 mono 48 kHz waveform after the int16 round trip, as laion-clap would see it."""
    return int16_to_float(decode_int16(path))


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
    n_frames = x.shape[0] // HOP_SAMPLES + 1
    out = np.empty((n_frames, MEL_BINS), dtype=np.float32)
    for t0 in range(0, n_frames, _MEL_BLOCK_FRAMES):
        t1 = min(t0 + _MEL_BLOCK_FRAMES, n_frames)
        out[t0:t1] = _mel_rows(x, t0, t1, x.shape[0])
    return out


def _mel_rows(x: np.ndarray, t0: int, t1: int, n: int, base: int = 0) -> np.ndarray:
    """Rows t0..t1 of `log_mel` of an n-sample waveform whose samples [base, base + len(x)) are `x`."""
    half = N_FFT // 2
    lo, hi = t0 * HOP_SAMPLES - half, (t1 - 1) * HOP_SAMPLES + half
    parts = [x[max(lo, 0) - base:min(hi, n) - base]]
    if lo < 0:  # reflect padding, taken from the signal itself (a 1-frame last block has too few samples of its own)
        parts.insert(0, x[1 - base:1 - lo - base][::-1])
    if hi > n:
        parts.append(x[n - 1 - (hi - n) - base:n - 1 - base][::-1])
    seg = np.concatenate(parts).astype(np.float64)
    if x.dtype == np.int16:
        seg = (seg / INT16_SCALE).astype(np.float32).astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(seg, N_FFT)[::HOP_SAMPLES]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=1)) ** 2
    return (10.0 * np.log10(np.maximum(power @ mel_filterbank(), 1e-10))).astype(np.float32)


class _StreamingLogMel:
    """`log_mel` of an int16 waveform fed in pieces, in the same STFT blocks as `log_mel` (so bit-identical),
    holding only the samples the next block needs; clips of at most 10 s are kept whole for repeat-padding."""

    def __init__(self) -> None:
        self._buf = np.zeros(0, dtype=np.int16)  # samples [self._base, self._n)
        self._base = 0
        self._n = 0
        self._t0 = 0  # first mel row not yet computed
        self._mel = np.empty((0, MEL_BINS), dtype=np.float32)  # rows [0, self._t0) are filled

    def expect(self, samples: int) -> None:
        """Preallocate the mel for the announced length: growing it by copies would hold it up to twice."""
        frames = min(samples // HOP_SAMPLES + 1, _PREALLOC_MAX_FRAMES)
        if samples > CLIP_SAMPLES and frames > self._mel.shape[0]:
            self._grow(frames)

    def _grow(self, frames: int) -> None:
        grown = np.empty((frames, MEL_BINS), dtype=np.float32)
        grown[:self._t0] = self._mel[:self._t0]
        self._mel = grown

    def _store(self, t0: int, rows: np.ndarray) -> None:
        t1 = t0 + rows.shape[0]
        if t1 > self._mel.shape[0]:
            self._grow(max(t1, 2 * self._mel.shape[0]))
        self._mel[t0:t1] = rows

    def feed(self, piece: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, piece])
        self._n += piece.shape[0]
        safe = self._n - _STREAM_MARGIN_SAMPLES  # samples the final length fix cannot change
        if safe <= CLIP_SAMPLES:
            return  # may still be a short clip, which is repeat-padded from its whole waveform
        while True:
            t1 = self._t0 + _MEL_BLOCK_FRAMES
            if (t1 - 1) * HOP_SAMPLES + N_FFT // 2 > safe:
                return
            self._store(self._t0, _mel_rows(self._buf, self._t0, t1, self._n, self._base))
            keep_from = t1 * HOP_SAMPLES - N_FFT // 2 - 1  # the next block's first sample, and one before it for
            # the end's reflect padding when that block is the last and the clip ends exactly on its frame
            self._buf = self._buf[keep_from - self._base:].copy()
            self._base, self._t0 = keep_from, t1

    def finish(self, n: int) -> tuple[np.ndarray, bool]:
        """The fusion input of the whole clip, its length fixed to `n` samples (the length rule)."""
        tail = _fix_length(self._buf, n - self._base)
        if n <= CLIP_SAMPLES:
            return waveform_to_mel_fusion(tail)
        n_frames = n // HOP_SAMPLES + 1
        for t0 in range(self._t0, n_frames, _MEL_BLOCK_FRAMES):
            t1 = min(t0 + _MEL_BLOCK_FRAMES, n_frames)
            self._store(t0, _mel_rows(tail, t0, t1, n, self._base))
            self._t0 = t1  # `_grow` keeps rows [0, _t0): rows stored here must count, or a later grow drops them
        mel, self._mel, self._buf = self._mel[:n_frames], self._mel[:0], tail[:0]
        return _fusion_from_mel(mel)


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
    return _fusion_from_mel(log_mel(wave))


def _fusion_from_mel(mel: np.ndarray) -> tuple[np.ndarray, bool]:
    """The fusion input of a clip longer than 10 s from its whole-clip mel: `CHUNK_RULE` chunks + shrunk mel."""
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
    """Decode and featurise one file, streaming: memory grows only with the whole-clip mel (see the bound above)."""
    mel = _StreamingLogMel()
    n_out = _decode_blocks(Path(path), mel.feed, mel.expect)
    return mel.finish(n_out)
