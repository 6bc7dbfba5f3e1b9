"""Procedural, class-dependent audio for the synthetic corpus: one recipe per BST class.

Recipes differ in spectral shape, envelope, pitch and harmonicity, noise colour and onset density (percussive decays
for is-p, harmonic notes for is-s/is-w/is-k, formant babble for speech, filtered noise beds for soundscapes, sweeps
and beeps for fx-el, ...). Siblings share building blocks and overlapping parameter ranges (a solo-instrument melody
is made of the same notes as the instrument samples; urban soundscapes contain vehicles), and `render_clip` can mix
in a "confuser" class, so the classes are learnable but not trivially separable.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import dsp as synth_dsp
from .sources import TIMBRES, babble, drum_pattern, engine, melody, note, pad

SAMPLE_RATE_HZ = 44_100
Recipe = Callable[[np.random.Generator, int, int], np.ndarray]

#: log-uniform clip-length range per parent (seconds): one-shots are short, soundscapes long
DURATION_RANGE_S: dict[str, tuple[float, float]] = {
    "m": (1.5, 8.0), "is": (0.5, 2.5), "sp": (1.0, 6.0), "fx": (0.5, 5.0), "ss": (2.0, 8.0),
}


def _m_sp(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return drum_pattern(rng, n, sr) + 0.05 * synth_dsp.noise(rng, n, sr, synth_dsp.band(50, 2000, 1.0))


def _m_si(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    timbre = rng.choice(TIMBRES[:4])
    return melody(rng, n, sr, timbre, rng.uniform(45, 76), rng.uniform(1.5, 5))


def _m_m(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    root = rng.uniform(40, 55)
    chord = pad(rng, n, sr, [synth_dsp.midi_hz(root + 12 + k) for k in (0, 4, 7)]) / 3
    lead = melody(rng, n, sr, rng.choice(TIMBRES), root + 24, rng.uniform(2, 5))
    bass = melody(rng, n, sr, "pluck", root, rng.uniform(1, 3))
    return 0.5 * chord + lead + 0.7 * bass + drum_pattern(rng, n, sr, 0.8)


def _single(rng: np.random.Generator, n: int, sr: int, timbre: str, lo: float, hi: float,
            chord_prob: float = 0.0) -> np.ndarray:
    root = rng.uniform(lo, hi)
    voices = (0, 4, 7) if rng.uniform() < chord_prob else (0,)
    return sum(note(rng, n, sr, synth_dsp.midi_hz(root + k), timbre) for k in voices)


def _is_p(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    start = int(rng.uniform(0, 0.02) * sr)
    synth_dsp.place(out, [start], synth_dsp.hit(rng, sr, rng.choice(["kick", "snare", "hat", "tom", "clap", "cymbal"])))
    return out


def _is_s(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _single(rng, n, sr, "pluck" if rng.uniform() < 0.6 else "bow", 36, 84, chord_prob=0.25)


def _is_w(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _single(rng, n, sr, "blow", 50, 88)


def _is_k(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _single(rng, n, sr, "keys", 33, 96, chord_prob=0.4)


def _is_e(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    if rng.uniform() < 0.3:
        return melody(rng, n, sr, "synth", rng.uniform(40, 70), rng.uniform(6, 12))
    return _single(rng, n, sr, "synth", 28, 84)


def _sp_s(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    f0 = rng.uniform(90, 240)
    return synth_dsp.voice(rng, n, sr, f0, formant_scale=rng.uniform(0.9, 1.15))


def _sp_c(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = 0.3 * synth_dsp.noise(rng, n, sr, synth_dsp.band(300, 3000))
    for _ in range(int(rng.integers(2, 4))):
        out += rng.uniform(0.3, 1.0) * synth_dsp.voice(rng, n, sr, rng.uniform(90, 260), syllable_rate_hz=rng.uniform(3, 6))
    return synth_dsp.reverb(rng, out, sr, 0.4, 0.35)


def _sp_p(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    f0, monotone = rng.uniform(70, 300), rng.uniform() < 0.7
    x = synth_dsp.voice(rng, n, sr, f0, monotone=monotone, formant_scale=rng.choice([0.7, 1.0, 1.4]))
    effect = rng.integers(3)
    if effect == 0:  # ring modulator
        return x * synth_dsp.sine(synth_dsp.phase_of(rng.uniform(30, 200), n, sr))
    if effect == 1:  # bit crusher with sample-and-hold
        hold = int(rng.integers(4, 12))
        x = np.repeat(synth_dsp.unit(x)[::hold], hold)[:n]
        levels = 2 ** int(rng.integers(3, 6))
        return np.round(x * levels) / levels
    return np.tanh(6 * synth_dsp.unit(x)) + 0.2 * synth_dsp.square(synth_dsp.phase_of(rng.uniform(80, 160), n, sr)) * (np.abs(x) > 0.05)


def _fx_o(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    template = synth_dsp.modal(rng, sr, rng.uniform(300, 1500), rng.uniform(2000, 8000), rng.uniform(0.02, 0.3))
    synth_dsp.place(out, synth_dsp.onsets(rng, n, sr, rng.uniform(0.7, 4), 0.8), template, gains=rng.uniform(0.3, 1, 64))
    if rng.uniform() < 0.3:  # creak / slide
        creak = synth_dsp.saw(synth_dsp.phase_of(rng.uniform(20, 60) * synth_dsp.lfo(n, sr, 0.7, 0.4), n, sr))
        out += 0.3 * synth_dsp.spectral_filter(creak, sr, synth_dsp.band(400, 2500)) * synth_dsp.swell(n, sr, 0.2, 0.2)
    return out


def _fx_v(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = engine(rng, n, sr, pass_by=rng.uniform() < 0.6)
    if rng.uniform() < 0.25:  # horn
        m = min(n, int(rng.uniform(0.3, 0.9) * sr))
        horn = synth_dsp.square(synth_dsp.phase_of(rng.uniform(350, 500), m, sr)) * synth_dsp.swell(m, sr, 0.01, 0.05)
        synth_dsp.place(out, [int(rng.uniform(0, max(1, n - m)))], synth_dsp.spectral_filter(horn, sr, synth_dsp.band(200, 3000)))
    return out


def _fx_m(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    hum = synth_dsp.tone(synth_dsp.phase_of(rng.uniform(25, 120), n, sr), 120, sr, 8, 0.8)
    out = hum + rng.uniform(0.3, 1.5) * synth_dsp.noise(rng, n, sr, synth_dsp.band(rng.uniform(100, 800), rng.uniform(2000, 8000)))
    clicks = np.zeros(n)
    synth_dsp.place(clicks, synth_dsp.onsets(rng, n, sr, rng.uniform(2, 20), 0.05), synth_dsp.modal(rng, sr, 800, 5000, 0.01, 3))
    return out + 2 * clicks


def _fx_h(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    kind = rng.integers(3)
    out = np.zeros(n)
    if kind == 0:  # footsteps
        step = synth_dsp.noise(rng, int(0.15 * sr), sr, synth_dsp.band(80, rng.uniform(800, 3000))) * synth_dsp.decay(int(0.15 * sr), sr, 0.03)
        synth_dsp.place(out, synth_dsp.onsets(rng, n, sr, rng.uniform(1.5, 2.5), 0.15), step, gains=rng.uniform(0.6, 1, 64))
        return out
    if kind == 1:  # breathing
        breath = synth_dsp.noise(rng, n, sr, synth_dsp.band(400, 3000))
        return breath * np.clip(synth_dsp.sine(2 * np.pi * rng.uniform(0.2, 0.4) * synth_dsp.times(n, sr)), 0, None) ** 2
    synth_dsp.place(out, synth_dsp.onsets(rng, n, sr, rng.uniform(3, 7), 0.5), synth_dsp.hit(rng, sr, "clap"), gains=rng.uniform(0.5, 1, 256))
    return out


def _fx_a(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    kind = rng.integers(3)
    if kind == 0:  # bird chirps
        m = int(rng.uniform(0.04, 0.2) * sr)
        call = synth_dsp.chirp(m, sr, rng.uniform(2000, 5000), rng.uniform(2500, 7000)) * synth_dsp.hann(m)
        synth_dsp.place(out, synth_dsp.onsets(rng, n, sr, rng.uniform(2, 8), 0.6), call)
    elif kind == 1:  # bark / meow: a harmonic burst with a pitch glide
        m = int(rng.uniform(0.12, 0.6) * sr)
        f0 = rng.uniform(250, 700) * (1 + 0.3 * np.sin(np.linspace(0, np.pi, m)))
        call = synth_dsp.spectral_filter(synth_dsp.saw(synth_dsp.phase_of(f0, m, sr)), sr, synth_dsp.band(400, 3000)) * synth_dsp.hann(m)
        synth_dsp.place(out, synth_dsp.onsets(rng, n, sr, rng.uniform(0.8, 2.5), 0.6), call)
    else:  # insect buzz
        hiss = synth_dsp.noise(rng, n, sr, synth_dsp.band(3000, 9000))
        out = hiss * (0.5 + 0.5 * synth_dsp.sine(2 * np.pi * rng.uniform(20, 60) * synth_dsp.times(n, sr)))
    return out + 0.05 * synth_dsp.noise(rng, n, sr, synth_dsp.band(100, 2000, 1.0))


def _fx_n(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    kind = rng.integers(4)
    if kind == 0:  # wind
        return synth_dsp.noise(rng, n, sr, synth_dsp.band(80, rng.uniform(300, 1200), 1.0)) * synth_dsp.lfo(n, sr, rng.uniform(0.1, 0.5), 0.6)
    if kind == 1:  # rain / crackling fire
        out = 0.3 * synth_dsp.noise(rng, n, sr, synth_dsp.band(40, 500, 2.0))
        synth_dsp.place(out, synth_dsp.onsets(rng, n, sr, rng.uniform(20, 150)), synth_dsp.modal(rng, sr, 1500, 9000, 0.004, 2),
                gains=rng.uniform(0.1, 1, 20000))
        return out
    if kind == 2:  # thunder / explosion
        start = int(rng.uniform(0, 0.3) * n)
        rumble = synth_dsp.noise(rng, n - start, sr, synth_dsp.band(20, 800, 2.0))
        return np.concatenate([np.zeros(start), rumble * synth_dsp.decay(n - start, sr, rng.uniform(0.3, 1.5), 0.01)])
    return synth_dsp.noise(rng, n, sr, synth_dsp.band(400, 4000)) * (1 + 0.5 * synth_dsp.noise(rng, n, sr, synth_dsp.band(2, 30)))  # water


def _fx_ex(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    for start in synth_dsp.onsets(rng, n, sr, rng.uniform(10, 80)):
        m = int(rng.uniform(0.005, 0.08) * sr)
        if rng.uniform() < 0.6:
            grain = synth_dsp.chirp(m, sr, rng.uniform(50, 8000), rng.uniform(50, 8000))
        else:
            grain = synth_dsp.noise(rng, m, sr)
        synth_dsp.place(out, [start], grain * synth_dsp.hann(m) * rng.uniform(0.2, 1))
    if rng.uniform() < 0.5:  # stutter: repeat a short block
        block = int(rng.uniform(0.03, 0.2) * sr)
        out = np.tile(out[:block], n // block + 1)[:n] * 0.7 + 0.3 * out
    return out


def _fx_el(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:  # riser / drop sweep with a whoosh
        lo, hi = rng.uniform(80, 400), rng.uniform(2000, 9000)
        f = (lo, hi) if rng.uniform() < 0.5 else (hi, lo)
        sweep = synth_dsp.chirp(n, sr, *f) * synth_dsp.swell(n, sr, 0.2 * n / sr, 0.1 * n / sr)
        return sweep + 0.4 * synth_dsp.noise(rng, n, sr, synth_dsp.band(500, 8000)) * synth_dsp.hann(n)
    out = np.zeros(n)
    if kind == 1:  # beeps
        m = int(rng.uniform(0.05, 0.3) * sr)
        beep = synth_dsp.sine(synth_dsp.phase_of(rng.uniform(500, 3000), m, sr)) * synth_dsp.swell(m, sr, 0.005, 0.01)
        synth_dsp.place(out, synth_dsp.onsets(rng, n, sr, rng.uniform(1, 5), 0.2), beep)
        return out
    m = int(rng.uniform(0.1, 0.4) * sr)  # lasers
    starts = synth_dsp.onsets(rng, n, sr, rng.uniform(1, 4), 0.5)
    synth_dsp.place(out, starts, synth_dsp.chirp(m, sr, rng.uniform(2000, 5000), rng.uniform(100, 400)) * synth_dsp.decay(m, sr, 0.1))
    return out


def _ss_n(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    bed = synth_dsp.noise(rng, n, sr, synth_dsp.band(100, rng.uniform(1500, 6000), 1.0)) * synth_dsp.lfo(n, sr, rng.uniform(0.05, 0.2), 0.4)
    return bed + 0.6 * _fx_a(rng, n, sr) * (rng.uniform() < 0.7)


def _ss_i(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    room = synth_dsp.noise(rng, n, sr, synth_dsp.band(30, 400, 2.0))
    out = room + 0.3 * synth_dsp.tone(synth_dsp.phase_of(rng.choice([50.0, 60.0]), n, sr), 60, sr, 5, 1.0)  # mains hum
    events = np.zeros(n)
    starts = synth_dsp.onsets(rng, n, sr, rng.uniform(0.3, 2))
    synth_dsp.place(events, starts, synth_dsp.modal(rng, sr, 800, 6000, 0.1), gains=rng.uniform(0.1, 0.5, 64))
    return out + events + 0.3 * babble(rng, n, sr) * (rng.uniform() < 0.5)


def _ss_u(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = 0.6 * engine(rng, n, sr, pass_by=False) + synth_dsp.noise(rng, n, sr, synth_dsp.band(30, 1500, 1.5))
    for _ in range(int(rng.integers(1, 3))):
        out += 0.8 * engine(rng, n, sr, pass_by=True)
    return out + 0.3 * babble(rng, n, sr) * (rng.uniform() < 0.4)


def _ss_s(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    root = rng.uniform(30, 50)
    drone = pad(rng, n, sr, [synth_dsp.midi_hz(root + k) for k in rng.choice([0, 7, 12, 15, 19], 3, replace=False)])
    drone *= synth_dsp.lfo(n, sr, rng.uniform(0.05, 0.3), 0.5, rng.uniform(0, 6))
    return drone + 0.5 * synth_dsp.noise(rng, n, sr, synth_dsp.band(200, 3000)) * synth_dsp.lfo(n, sr, rng.uniform(0.05, 0.2), 0.8)


RECIPES: dict[str, Recipe] = {
    "m-sp": _m_sp, "m-si": _m_si, "m-m": _m_m,
    "is-p": _is_p, "is-s": _is_s, "is-w": _is_w, "is-k": _is_k, "is-e": _is_e,
    "sp-s": _sp_s, "sp-c": _sp_c, "sp-p": _sp_p,
    "fx-o": _fx_o, "fx-v": _fx_v, "fx-m": _fx_m, "fx-h": _fx_h, "fx-a": _fx_a, "fx-n": _fx_n, "fx-ex": _fx_ex,
    "fx-el": _fx_el,
    "ss-n": _ss_n, "ss-i": _ss_i, "ss-u": _ss_u, "ss-s": _ss_s,
}


def draw_duration_s(rng: np.random.Generator, code: str) -> float:
    """Clip length for a class: log-uniform within its parent's range (0.5-8 s overall)."""
    lo, hi = DURATION_RANGE_S[code.split("-", 1)[0]]
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def render_clip(
    rng: np.random.Generator,
    code: str,
    duration_s: float,
    *,
    confuser: str | None = None,
    mix: float = 0.0,
    sr: int = SAMPLE_RATE_HZ,
) -> np.ndarray:
    """A float clip in [-1, 1] of class `code`, optionally blended with class `confuser` at weight `mix`, plus a
    low background noise at a random SNR and a random peak gain. `*-other` codes use a random recipe of their parent
    (those rows are noise to drop anyway)."""
    n = max(1, int(round(duration_s * sr)))
    x = synth_dsp.unit(RECIPES[_recipe_code(rng, code)](rng, n, sr))
    if confuser is not None and mix >= 0.3:  # only clearly ambiguous clips pay for a second recipe
        x = (1.0 - mix) * x + mix * synth_dsp.unit(RECIPES[_recipe_code(rng, confuser)](rng, n, sr))
    floor = 10.0 ** (-rng.uniform(30, 60) / 20.0)
    x = synth_dsp.unit(x + floor * (rng.random(n, dtype=np.float32) - np.float32(0.5)))
    return (x * rng.uniform(0.1, 0.9)).astype(np.float64)


def _recipe_code(rng: np.random.Generator, code: str) -> str:
    if code in RECIPES:
        return code
    parent = code.split("-", 1)[0]
    return str(rng.choice([c for c in RECIPES if c.split("-", 1)[0] == parent]))


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float [-1, 1] -> int16 (rounded, clipped): quantise ourselves so files are byte-identical across libsndfiles."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
