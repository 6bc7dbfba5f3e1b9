"""THE portable resampler: any source rate -> 48 kHz by an exact rational polyphase Kaiser-windowed sinc.

The bundle's `resample` graph (`bst_rt.export.portable_resample`) computes exactly this design from the rate it is
fed, so a client in any language resamples by running a graph instead of reproducing soxr (docs/portable.md).
This module holds the design once (the graph builder reads its constants) and its numpy twin, which the Python
runtime streams every file through (`bst_rt.runtime.audio`), so every client resamples with the one design.

Design: for a rate `sr`, L / M = 48000 / sr in lowest terms (the gcd is built only from 48000's primes 2, 3, 5,
so the graph needs no loop). Output sample j sits at input position j * M / L; its value is
sum_i x[i] h(pos - i), h(t) = 2 fc sinc(2 fc t) kaiser(t / half), with the cutoff fc = `CUTOFF` of the lower
rate's Nyquist (soxr HQ's half-amplitude point) and `HALF_WIDTH` lower-rate samples each side (the Kaiser rule for
`ATTENUATION_DB` over soxr HQ's transition width). Samples outside the clip are zeros, as soxr's flushed stream.
The L phases of h are a [L, W] table (W a whole number of hops M), so the filtering is a sum of W / M matrix
products of [rows, M] blocks of the padded input with [M, L] slices of the table, in float64 (a Loop of MatMuls
in the graph).
Output length: librosa's rule `ceil(n * 48000 / sr)`. 48 kHz passes through untouched.

A rate that shares almost no factor with 48000 (47999 Hz, 44056 Hz) would need a table of millions of phases. Such a
rate is filtered as its nearest multiple of `FALLBACK_STEP_HZ` (`design_rate`), whose table is small: the clip
plays back at most 25 Hz / 8000 Hz = 0.3 % fast or slow, far inside one mel band, and every client does the same,
so no clip is lost to its rate and no client decides it differently.
"""
from __future__ import annotations

import functools
import math

import numpy as np

TARGET_RATE_HZ = 48000
#: the passband's half-amplitude point, as a fraction of the lower of the two rates' Nyquist frequencies
CUTOFF = 0.955
#: Kaiser window parameters: stopband attenuation and half length in samples of the lower rate
ATTENUATION_DB = 120.0
HALF_WIDTH = 112
KAISER_BETA = 0.1102 * (ATTENUATION_DB - 8.7)
#: terms of the I0 power series (beta <= 12.3: the 30th term is below 1e-17 of the sum)
I0_TERMS = 30
#: prime powers dividing 48000 = 2^7 * 3 * 5^3, for the loop-free gcd
GCD_FACTORS = ((2, 7), (3, 1), (5, 3))
#: the phase table may hold at most this many taps (L * W); a rate that would need more is filtered as its nearest
#: multiple of FALLBACK_STEP_HZ (which divides 48000, so that table has at most 960 phases)
MAX_TABLE = 1 << 24
FALLBACK_STEP_HZ = 50
#: the input hop M is raised to at least this (L and M scaled by the same k: the same phases, repeated), so a
#: 96 kHz source (M = 2) sums a few [rows, 64] products instead of hundreds of [rows, 2] ones
MIN_HOP = 64
RESAMPLER = f"polyphase-kaiser-sinc cutoff={CUTOFF} half_width={HALF_WIDTH} beta={KAISER_BETA:.4f}"


def gcd48k(rate: int) -> int:
    """gcd(48000, rate) from 48000's prime powers (the graph computes it the same way)."""
    g = 1
    for p, k in GCD_FACTORS:
        for e in range(1, k + 1):
            if rate % p ** e == 0:
                g *= p
    return g


def _i0(x: np.ndarray) -> np.ndarray:
    """Modified Bessel I0 by its power series, term by term as the graph does it."""
    q = (x / 2.0) ** 2
    term = np.ones_like(x)
    total = np.ones_like(x)
    for k in range(1, I0_TERMS):
        term = term * q / float(k * k)
        total = total + term
    return total


def _exact_shape(rate: int) -> tuple[int, int, int, int]:
    g = gcd48k(rate)
    up, down = TARGET_RATE_HZ // g, rate // g
    k = max(1, -(-MIN_HOP // down))
    up, down = up * k, down * k
    scale = min(1.0, TARGET_RATE_HZ / rate)
    pad = int(math.ceil(HALF_WIDTH / scale))
    support = (up - 1) * down // up + 2 * pad + 2
    return up, down, pad, -(-support // down) * down


def design_rate(rate: int) -> int:
    """The rate the filter is designed for: `rate` itself, or its nearest multiple of FALLBACK_STEP_HZ (halves
    round up) when the exact table would exceed MAX_TABLE taps; the graph computes the same rule."""
    up, _, _, width = _exact_shape(rate)
    if up * width <= MAX_TABLE:
        return int(rate)
    return (int(rate) + FALLBACK_STEP_HZ // 2) // FALLBACK_STEP_HZ * FALLBACK_STEP_HZ


def table_shape(rate: int) -> tuple[int, int, int, int]:
    """(L, M, D, W) of the design for `rate` (`design_rate`): phases, input hop, left padding and taps per phase;
    W is a whole number of hops (the taps past the filter's support are zeros), so the filter is a sum of W / M
    products of [rows, M] blocks."""
    return _exact_shape(design_rate(rate))


@functools.lru_cache(maxsize=16)
def phase_table(rate: int) -> np.ndarray:
    """[L, W] float64: row p holds the taps of output phase p, aligned to its input window."""
    rate = design_rate(rate)
    up, down, pad, width = table_shape(rate)
    scale = min(1.0, TARGET_RATE_HZ / rate)
    fc = CUTOFF * 0.5 * scale
    half = HALF_WIDTH / scale
    p = np.arange(up, dtype=np.int64)[:, None]
    off = (p * down) // up
    frac = ((p * down) % up).astype(np.float64) / up
    d = np.arange(width, dtype=np.int64)[None, :] - off - pad
    t = frac - d.astype(np.float64)
    r = np.minimum(np.abs(t) / half, 1.0)
    window = _i0(KAISER_BETA * np.sqrt(1.0 - r * r)) / _i0(np.float64(KAISER_BETA))
    arg = 2.0 * fc * t
    sinc = np.where(arg == 0.0, 1.0, np.sin(np.pi * arg) / np.where(arg == 0.0, 1.0, np.pi * arg))
    return np.where(np.abs(t) < half, 2.0 * fc * sinc * window, 0.0)


def output_length(n: int, rate: int) -> int:
    """librosa's rule in float64 (as `bst_rt.runtime.audio.length_rule`) at the design rate."""
    return int(np.ceil(n * (float(TARGET_RATE_HZ) / design_rate(rate))))


class StreamResampler:
    """The design applied block by block (`bst_rt.runtime.audio` streams files through it): it keeps only the
    input samples the next output rows need, so memory stays bounded for long files.

    Sums run in float64 and are rounded to float32 once, as in the graph, so a different summation order (BLAS
    here, onnxruntime's MatMul there) almost never changes a float32 sample, and the int16 round trip that follows
    sees the same numbers in every client. Products run in chunks of a fixed number of rows at fixed positions (the
    last chunk zero-padded), so the output is bit-identical however the input is cut into feeds."""

    def __init__(self, rate: int) -> None:
        self.rate = int(rate)
        self.up, self.down, pad, self.width = table_shape(self.rate)
        self.blocks = self.width // self.down
        table = phase_table(self.rate).reshape(self.up, self.blocks, self.down)
        self.taps = np.ascontiguousarray(table.transpose(1, 2, 0))  # [W / M, M, L]: block b's [M, L] product
        self.chunk = max(1, (1 << 21) // self.width)  # rows per product, fixed for the rate
        self._buf = np.zeros(pad, np.float32)  # padded-input samples [self._base, ...), self._base = self._q * M
        self._base = 0
        self._q = 0  # next output row (of L samples); always a multiple of `chunk`
        self._n_in = 0

    def _product(self, q0: int) -> np.ndarray:
        lo = q0 * self.down - self._base
        rows = self._buf[lo:lo + (self.chunk + self.blocks - 1) * self.down].astype(np.float64)
        rows = rows.reshape(-1, self.down)
        acc = rows[0:self.chunk] @ self.taps[0]
        for b in range(1, self.blocks):
            acc += rows[b:b + self.chunk] @ self.taps[b]
        return acc.reshape(-1).astype(np.float32)

    def feed(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """48 kHz samples made computable by `x`; with `last`, the rest, up to librosa's output length."""
        x = np.asarray(x, dtype=np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += x.shape[0]
        avail = self._base + self._buf.shape[0]
        if last:
            n_out = output_length(self._n_in, self.rate)
            rows = -(-n_out // self.up)
            q_end = -(-rows // self.chunk) * self.chunk
            need = (q_end + self.blocks - 1) * self.down
            if need > avail:
                self._buf = np.concatenate([self._buf, np.zeros(need - avail, np.float32)])
        else:
            ready = (avail - self.width) // self.down + 1 if avail >= self.width else 0
            q_end = ready // self.chunk * self.chunk
        q_end = max(q_end, self._q)
        parts = [self._product(q0) for q0 in range(self._q, q_end, self.chunk)]
        out = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if last:
            out = out[:max(0, output_length(self._n_in, self.rate) - self._q * self.up)]
        drop = q_end * self.down - self._base
        self._buf, self._base, self._q = self._buf[drop:].copy(), self._base + drop, q_end
        return out


def resample(wave: np.ndarray, rate: int) -> np.ndarray:
    """The design applied to a whole mono float32 waveform (one feed of the streaming path)."""
    x = np.asarray(wave, dtype=np.float32)
    if rate == TARGET_RATE_HZ:
        return x.copy()
    return StreamResampler(rate).feed(x, last=True)
