"""Signal building blocks for the synthetic corpus: shaped noise, envelopes, tones, hits, voices, reverb.

Everything is vectorised numpy (FFT filtering instead of sample loops) because the test corpus must be generated in
seconds on a few shared cores. Every random choice comes from the `numpy.random.Generator` passed in, so
a clip is a pure function of its seed.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Gain = Callable[[np.ndarray], np.ndarray]
#: longer noise is one FFT period of this many samples (about 1.5 s) repeated: far cheaper, inaudible in a noise bed
NOISE_PERIOD = 1 << 16


def fft_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT size pocketfft handles fast, at most a few percent above n."""
    best = 1 << max(1, int(n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35 << max(0, int((n + p35 - 1) // p35 - 1).bit_length())
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def spectral_filter(x: np.ndarray, sr: float, gain: Gain) -> np.ndarray:
    """Zero-phase filter `x` by a magnitude response given as a function of frequency in Hz."""
    m = fft_len(len(x))
    f = np.fft.rfftfreq(m, 1.0 / sr)
    f[0] = f[1]
    return np.fft.irfft(np.fft.rfft(x, m) * gain(f), m)[: len(x)]


def band(lo_hz: float | None = None, hi_hz: float | None = None, exponent: float = 0.0, order: int = 2) -> Gain:
    """Magnitude response: 1/f^(exponent/2) colour with Butterworth-like high-pass `lo_hz` and low-pass `hi_hz`."""

    def gain(f: np.ndarray) -> np.ndarray:
        den = np.ones_like(f)
        if lo_hz:
            r = lo_hz / f
            den += _square_power(r * r, order)
        if hi_hz:
            r = f / hi_hz
            den += _square_power(r * r, order)
        g = 1.0 / np.sqrt(den)
        return g * np.exp(np.log(f) * (-exponent / 2.0)) if exponent else g

    gain.hi_hz = hi_hz  # type: ignore[attr-defined]  # lets `noise` synthesise low-passed noise at a lower rate
    return gain


def _square_power(r2: np.ndarray, order: int) -> np.ndarray:
    out = r2.copy()
    for _ in range(order - 1):
        out *= r2
    return out


def noise(rng: np.random.Generator, n: int, sr: float, gain: Gain | None = None) -> np.ndarray:
    """Unit-RMS noise of `n` samples with the given magnitude response (white when None).

    Low-passed noise (a `band` with hi_hz) is made at a rate of at least 3x its cut-off and linearly upsampled."""
    if n <= 0:
        return np.zeros(0)
    if gain is None:
        return (rng.random(n) - 0.5) * np.sqrt(12.0)
    hi_hz = getattr(gain, "hi_hz", None)
    if hi_hz and _rate_factor(sr, hi_hz) > 1:
        x = low_rate(n, sr, hi_hz, lambda n_low, sr_low: noise(rng, n_low, sr_low, gain))
        return x / (np.sqrt(np.mean(x * x)) + 1e-12)
    m = min(fft_len(n), NOISE_PERIOD)
    f = np.fft.rfftfreq(m, 1.0 / sr)
    f[0] = f[1]
    spec = (rng.random(2 * len(f), dtype=np.float32) - np.float32(0.5)).view(np.complex64) * gain(f)
    x = np.fft.irfft(spec, m)
    x = np.tile(x, -(-n // m))[:n] if n > m else x[:n]  # an inverse FFT is periodic: tiling it is seamless
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _rate_factor(sr: float, hi_hz: float) -> int:
    factor = 1
    while factor < 16 and sr / (4 * factor) > 3.0 * hi_hz:
        factor *= 2
    return factor


def low_rate(n: int, sr: float, hi_hz: float, render: Callable[[int, float], np.ndarray]) -> np.ndarray:
    """`render(n, sr)` of content band-limited below `hi_hz`, made at a rate of at least 12x `hi_hz` (up to 16x
    fewer samples) and linearly upsampled: rumbles, engines and pads cost a fraction of full-rate synthesis."""
    factor = _rate_factor(sr, hi_hz)
    if factor == 1:
        return render(n, sr)
    low = render(n // factor + 2, sr / factor)
    return np.interp(np.arange(n) / factor, np.arange(len(low)), low)


def sine(phase: np.ndarray) -> np.ndarray:
    """sin(phase) via a float32 sine of the phase wrapped to [0, 2pi): much faster than a float64 sine, error < 1e-6."""
    c = phase * (0.5 / np.pi)
    c -= np.floor(c)
    c *= 2 * np.pi
    return np.sin(c.astype(np.float32)).astype(np.float64)


def cosine(phase: np.ndarray) -> np.ndarray:
    return sine(np.asarray(phase) + 0.5 * np.pi)


def hann(m: int) -> np.ndarray:
    """numpy.hanning(m) through the fast `sine`: grain, call and syllable windows."""
    if m < 2:
        return np.ones(max(m, 0))
    return 0.5 - 0.5 * cosine(np.arange(m) * (2 * np.pi / (m - 1)))


def times(n: int, sr: float) -> np.ndarray:
    return np.arange(n) / sr


def decay(n: int, sr: int, tau_s: float, attack_s: float = 0.002) -> np.ndarray:
    """Linear attack then exponential decay."""
    env = np.exp((times(n, sr) * (-1.0 / tau_s)).astype(np.float32)).astype(np.float64)
    a = min(n, max(1, int(attack_s * sr)))
    env[:a] *= np.linspace(0.0, 1.0, a)
    return env


def swell(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    """Sustained envelope: linear attack, flat, linear release (each clipped to the clip length)."""
    env = np.ones(n)
    a = min(n, max(1, int(attack_s * sr)))
    r = min(n - a, max(1, int(release_s * sr)))
    env[:a] = np.linspace(0.0, 1.0, a)
    if r > 0:
        env[n - r :] *= np.linspace(1.0, 0.0, r)
    return env


def lfo(n: int, sr: float, rate_hz: float, depth: float, phase: float = 0.0) -> np.ndarray:
    """1 + depth * sin: slow amplitude or pitch modulation (computed every 32 samples and interpolated)."""
    coarse = np.arange(0, n + 32, 32)
    return np.interp(np.arange(n), coarse, 1.0 + depth * sine(2 * np.pi * rate_hz * coarse / sr + phase))


def phase_of(freq_hz: np.ndarray | float, n: int, sr: float) -> np.ndarray:
    """Instantaneous phase (radians) of a possibly time-varying frequency."""
    f = np.broadcast_to(np.asarray(freq_hz, dtype=np.float64), (n,))
    return 2 * np.pi * np.cumsum(f) / sr


def tone(
    phase: np.ndarray,
    f0_max_hz: float,
    sr: int,
    n_harm: int,
    rolloff: float,
    *,
    odd: bool = False,
    inharm: float = 0.0,
    harm_decay: float = 0.0,
) -> np.ndarray:
    """Additive harmonic stack: amplitude h^-rolloff, optional odd-only, stiff-string inharmonicity, and per-harmonic
    decay rate (higher partials fade faster, as in plucked and struck sounds)."""
    out = np.zeros(len(phase), dtype=np.float32)
    fade = np.exp(np.arange(len(phase), dtype=np.float32) * np.float32(-harm_decay / sr)) if harm_decay else None
    decay_h = np.ones(len(phase), dtype=np.float32) if fade is not None else None
    # harmonic partials by the Chebyshev recurrence sin((h+1)x) = 2 cos(x) sin(hx) - sin((h-1)x): one sine and one
    # cosine for the whole stack (float32 stays within 1e-5 over a dozen steps); inharmonic stacks need real sines
    two_cos = (2.0 * cosine(phase)).astype(np.float32) if not inharm else None
    prev, cur = np.zeros(len(phase), dtype=np.float32), sine(phase).astype(np.float32)
    for h in range(1, n_harm + 1):
        if two_cos is not None and h > 1:
            prev, cur = cur, two_cos * cur - prev
        if decay_h is not None and h > 1:
            decay_h *= fade
        if odd and h % 2 == 0:
            continue
        k = h * np.sqrt(1.0 + inharm * h * h)
        if k * f0_max_hz > 0.45 * sr:
            break
        partial = cur if two_cos is not None else sine(k * phase).astype(np.float32)
        out += np.float32(h ** (-rolloff)) * (partial if decay_h is None else partial * decay_h)
    return out.astype(np.float64)


def _cycles(phase: np.ndarray) -> np.ndarray:
    """Position within the period, in [0, 1)."""
    c = phase * (0.5 / np.pi)
    return c - np.floor(c)


def saw(phase: np.ndarray) -> np.ndarray:
    return 2.0 * _cycles(phase) - 1.0


def square(phase: np.ndarray, duty: float = 0.5) -> np.ndarray:
    return np.where(_cycles(phase) < duty, 1.0, -1.0)


def midi_hz(note: float) -> float:
    return float(440.0 * 2.0 ** ((note - 69.0) / 12.0))


def place(out: np.ndarray, onsets: np.ndarray | list[int], template: np.ndarray,
          gains: np.ndarray | list[float] | None = None) -> None:
    """Add `template` into `out` at each onset sample (truncated at the end); `gains` are cycled."""
    for i, start in enumerate(onsets):
        start = int(start)
        if start >= len(out) or start < 0:
            continue
        seg = template[: len(out) - start]
        out[start : start + len(seg)] += seg if gains is None else gains[i % len(gains)] * seg


def onsets(rng: np.random.Generator, n: int, sr: int, rate_hz: float, jitter: float = 1.0) -> np.ndarray:
    """Event times: jitter 0 gives a regular grid at `rate_hz`, jitter 1 a Poisson process of the same rate."""
    step = sr / rate_hz
    count = max(1, int(n / step) + 1)
    gaps = step * ((1.0 - jitter) + jitter * rng.exponential(1.0, count))
    return (np.cumsum(gaps) - gaps[0] * rng.uniform(0.0, 1.0)).astype(np.int64)


# ---- one-shot templates -------------------------------------------------------------------------------------------


def hit(rng: np.random.Generator, sr: int, kind: str) -> np.ndarray:
    """A percussive one-shot: kick, snare, hat, tom, clap or cymbal."""
    if kind == "kick":
        n = int(0.4 * sr)
        f = rng.uniform(40, 60) + rng.uniform(60, 140) * np.exp(-times(n, sr) / 0.03)
        return sine(phase_of(f, n, sr)) * decay(n, sr, rng.uniform(0.08, 0.2)) + 0.3 * noise(
            rng, n, sr
        ) * decay(n, sr, 0.004)
    if kind == "snare":
        n = int(0.3 * sr)
        body = sine(phase_of(rng.uniform(160, 240), n, sr)) * decay(n, sr, 0.04)
        return body + noise(rng, n, sr, band(1000, 7000)) * decay(n, sr, rng.uniform(0.05, 0.12))
    if kind == "hat":
        n = int(0.25 * sr)
        return noise(rng, n, sr, band(6000, 16000, order=3)) * decay(n, sr, rng.uniform(0.015, 0.09))
    if kind == "cymbal":
        n = int(1.5 * sr)
        return noise(rng, n, sr, band(3000, 14000)) * decay(n, sr, rng.uniform(0.3, 0.8))
    if kind == "clap":
        n = int(0.3 * sr)
        burst = noise(rng, n, sr, band(800, 3500))
        env = sum(np.roll(decay(n, sr, 0.006), int(k * 0.011 * sr)) for k in range(3)) + 0.6 * decay(n, sr, 0.08)
        return burst * env
    n = int(0.6 * sr)  # tom / hand drum
    f = rng.uniform(90, 380) * (1.0 + 0.3 * np.exp(-times(n, sr) / 0.05))
    return sine(phase_of(f, n, sr)) * decay(n, sr, rng.uniform(0.08, 0.3))


def modal(rng: np.random.Generator, sr: int, lo_hz: float, hi_hz: float, tau_s: float, modes: int = 5) -> np.ndarray:
    """An object impact: a few inharmonic damped sinusoids plus a click (knocks, dishes, keys)."""
    n = int(min(1.5, 6 * tau_s) * sr)
    t = times(n, sr)
    out = 0.5 * noise(rng, n, sr, band(lo_hz)) * decay(n, sr, 0.003)
    for f in np.exp(rng.uniform(np.log(lo_hz), np.log(hi_hz), modes)):
        out += rng.uniform(0.2, 1.0) * sine(2 * np.pi * f * t) * np.exp(-t / (tau_s * rng.uniform(0.3, 1.0)))
    return out


def chirp(n: int, sr: int, f_start: float, f_end: float) -> np.ndarray:
    """Exponential frequency sweep from f_start to f_end over n samples."""
    f = f_start * (f_end / f_start) ** (np.arange(n) / max(1, n - 1))
    return sine(phase_of(f, n, sr))


def voice(rng: np.random.Generator, n: int, sr: int, f0_hz: float, *, monotone: bool = False,
          formant_scale: float = 1.0, syllable_rate_hz: float = 4.0) -> np.ndarray:
    """Speech-like babble: glottal saw pulses shaped per syllable by three random formants, with pauses."""
    out = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.2) * sr)
    while pos < n:
        length = int(rng.uniform(0.6, 1.4) * sr / syllable_rate_hz)
        seg_n = min(length, n - pos)
        if seg_n < 64:
            break
        contour = 1.0 if monotone else (1.0 + rng.uniform(-0.15, 0.1) * np.linspace(0, 1, seg_n))
        src = saw(phase_of(f0_hz * contour, seg_n, sr)) + 0.3 * (rng.random(seg_n, dtype=np.float32) - np.float32(0.5))
        formants = np.array([rng.uniform(300, 850), rng.uniform(850, 2300), rng.uniform(2300, 3200)]) * formant_scale
        widths = np.array([90.0, 120.0, 180.0]) * formant_scale

        def envelope(f: np.ndarray, fm: np.ndarray = formants, bw: np.ndarray = widths) -> np.ndarray:
            g = sum(np.exp(-0.5 * ((f - c) / w) ** 2) for c, w in zip(fm, bw))
            return g / np.sqrt(1.0 + (f / 4000.0) ** 4)

        out[pos : pos + seg_n] += spectral_filter(src, sr, envelope) * hann(seg_n)
        pos += seg_n
        if rng.uniform() < 0.25:  # a pause between words
            pos += int(rng.uniform(0.1, 0.5) * sr)
    return out


def reverb(rng: np.random.Generator, x: np.ndarray, sr: int, tau_s: float, wet: float) -> np.ndarray:
    """Exponentially decaying noise impulse response, convolved by FFT."""
    ir_n = int(4 * tau_s * sr)
    ir = rng.standard_normal(ir_n) * np.exp(-times(ir_n, sr) / tau_s)
    ir /= np.sqrt(np.sum(ir * ir)) + 1e-12
    m = fft_len(len(x) + ir_n)
    tail = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(ir, m), m)[: len(x)]
    return (1.0 - wet) * x + wet * tail


def unit(x: np.ndarray) -> np.ndarray:
    """Scale to unit peak (silence stays silence)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return x / peak if peak > 0 else x
