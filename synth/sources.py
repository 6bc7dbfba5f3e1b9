"""Sound sources the class recipes are built from: instrument notes in five timbres, melodies, pads, drum grooves,
engines and crowd babble. Shared by sibling (and cousin) recipes on purpose: a solo-instrument melody is made of the
instrument samples' notes, urban soundscapes contain vehicle engines, so classes overlap the way real ones do.
"""
from __future__ import annotations

import numpy as np

from . import dsp as synth_dsp

TIMBRES = ("pluck", "bow", "blow", "keys", "synth")


def note(rng: np.random.Generator, n: int, sr: int, f0: float, timbre: str) -> np.ndarray:
    """One instrument note of the given timbre, filling n samples (envelope included)."""
    vib = synth_dsp.lfo(n, sr, rng.uniform(4.5, 6.5), rng.uniform(0.002, 0.008)) if timbre in ("bow", "blow") else 1.0
    ph = synth_dsp.phase_of(f0 * vib, n, sr)
    if timbre == "pluck":
        return synth_dsp.tone(ph, f0, sr, 10, 0.9, harm_decay=rng.uniform(2, 6)) * synth_dsp.decay(n, sr, rng.uniform(0.3, 1.2))
    if timbre == "bow":
        return synth_dsp.tone(ph, f0, sr, 12, 1.0) * synth_dsp.swell(n, sr, rng.uniform(0.05, 0.2), 0.1)
    if timbre == "blow":
        breath = 0.15 * synth_dsp.noise(rng, n, sr, synth_dsp.band(f0, 4 * f0))
        body = synth_dsp.tone(ph, f0, sr, 9, 1.4, odd=rng.uniform() < 0.5)  # odd partials only: clarinet-like
        return (body + breath) * synth_dsp.swell(n, sr, rng.uniform(0.03, 0.12), 0.08)
    if timbre == "keys":
        two_stage = synth_dsp.decay(n, sr, rng.uniform(0.6, 2.0)) * (0.6 + 0.4 * synth_dsp.decay(n, sr, 0.08))
        return synth_dsp.tone(ph, f0, sr, 10, 1.1, inharm=rng.uniform(2e-4, 1e-3), harm_decay=rng.uniform(1, 4)) * two_stage
    detune = synth_dsp.saw(synth_dsp.phase_of(f0 * 1.006, n, sr))
    raw = synth_dsp.saw(ph) + detune if rng.uniform() < 0.5 else synth_dsp.square(ph, rng.uniform(0.2, 0.5)) + 0.5 * detune
    filtered = synth_dsp.spectral_filter(raw, sr, synth_dsp.band(30, rng.uniform(800, 6000)))
    return filtered * synth_dsp.swell(n, sr, rng.uniform(0.005, 0.1), 0.05)


def pad(rng: np.random.Generator, n: int, sr: int, freqs: list[float]) -> np.ndarray:
    """Sustained detuned saw chord through one low-pass: pads and drones (one FFT filter for all voices)."""
    cutoff = rng.uniform(600, 4000)

    def render(m: int, rate: float) -> np.ndarray:
        raw = sum(synth_dsp.saw(synth_dsp.phase_of(f * synth_dsp.lfo(m, rate, rng.uniform(0.1, 0.5), 0.003), m, rate)) for f in freqs)
        return synth_dsp.spectral_filter(raw, rate, synth_dsp.band(30, cutoff))

    return synth_dsp.low_rate(n, sr, cutoff, render) * synth_dsp.swell(n, sr, rng.uniform(0.05, 1.0), 0.3)


def babble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Distant crowd murmur: speech-band noise with a syllable-rate amplitude flutter (cheap stand-in for voices)."""
    return synth_dsp.noise(rng, n, sr, synth_dsp.band(250, 3000)) * (1.0 + 0.8 * synth_dsp.noise(rng, n, sr, synth_dsp.band(2, 8)))


def melody(rng: np.random.Generator, n: int, sr: int, timbre: str, base: float, notes_per_s: float) -> np.ndarray:
    """A line of notes from a pentatonic scale, legato, in one timbre."""
    out = np.zeros(n)
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])
    pos = 0
    while pos < n - 256:
        length = min(n - pos, int(rng.uniform(0.5, 1.6) * sr / notes_per_s))
        out[pos : pos + length] += note(rng, length, sr, synth_dsp.midi_hz(base + rng.choice(scale)), timbre)
        pos += length
    return out


def drum_pattern(rng: np.random.Generator, n: int, sr: int, density: float = 1.0) -> np.ndarray:
    """A looped 16-step groove (kit or hand drums) at a random tempo."""
    out = np.zeros(n)
    step = int(sr * 60.0 / rng.uniform(70, 170) / 4)
    kit = ("kick", "snare", "hat") if rng.uniform() < 0.7 else ("tom", "tom", "clap")
    probs = np.array([[0.9, 0.1, 0.5, 0.1] * 4, [0.0, 0.1, 0.0, 0.2, 0.9, 0.1, 0.0, 0.2] * 2, [0.8] * 16]) * density
    bar = rng.uniform(size=probs.shape) < probs
    for voice_i, kind in enumerate(kit):
        template = synth_dsp.hit(rng, sr, kind)
        starts = [k * step for k in range(n // step + 1) if bar[voice_i, k % 16]]
        synth_dsp.place(out, starts, template, gains=rng.uniform(0.5, 1.0, len(starts)))
    return out


def engine(rng: np.random.Generator, n: int, sr: int, pass_by: bool) -> np.ndarray:
    """Engine harmonics over brown rumble; a pass-by gets a bell-shaped level and a Doppler pitch drop."""
    t = np.linspace(-1.0, 1.0, n)
    base, cutoff = rng.uniform(25, 90), rng.uniform(300, 1500)

    def harmonics(m: int, rate: float) -> np.ndarray:
        u = np.linspace(-1.0, 1.0, m)
        f0 = base * ((1.0 - 0.12 * np.tanh(4 * u)) if pass_by else synth_dsp.lfo(m, rate, 0.2, 0.1))
        return synth_dsp.spectral_filter(synth_dsp.saw(synth_dsp.phase_of(f0, m, rate)), rate, synth_dsp.band(20, cutoff))

    x = synth_dsp.low_rate(n, sr, cutoff, harmonics)
    x = x / (np.std(x) + 1e-12) + 0.7 * synth_dsp.noise(rng, n, sr, synth_dsp.band(30, 4000, 2.0))
    return x * (np.exp(-((t / 0.35) ** 2)) + 0.05 if pass_by else 1.0)
