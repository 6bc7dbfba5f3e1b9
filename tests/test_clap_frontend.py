"""The numpy audio front end against laion-clap's own preprocessing (librosa load, torchaudio mel, torchvision shrink)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bst_rt.runtime import audio
from bst_rt.runtime.errors import AudioError

LIBROSA_DATA = Path("/work/shared/audio/librosa-data")
AUDIO_CFG = {"sample_rate": 48000, "window_size": 1024, "hop_size": 480, "mel_bins": 64, "fmin": 50, "fmax": 14000}
MEL_DB_TOL = 5e-4  # dB, full-resolution channels (float64 numpy vs float32 torch STFT)
SHRINK_DB_TOL = 5e-3  # dB, the resized whole-clip channel


def _laion_mel_fusion(wave: np.ndarray):
    import torch

    from bst_rt.train.clap import fixed_chunk_rule
    from laion_clap.training.data import get_audio_features

    with fixed_chunk_rule():
        d = get_audio_features({}, torch.from_numpy(wave), audio.CLIP_SAMPLES, "fusion", "repeatpad", AUDIO_CFG)
    return d["mel_fusion"].numpy(), bool(d["longer"])


@pytest.mark.parametrize("n", [24000, 480000, 480479, 480480, 1_440_000, 2_880_123])
def test_mel_fusion_matches_laion(n):
    wave = audio.int16_round_trip(np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1)
    mel, longer = audio.waveform_to_mel_fusion(wave)
    ref, ref_longer = _laion_mel_fusion(wave)
    err = np.abs(mel - ref).max(axis=(1, 2))
    print(f"n={n} longer={longer} max dB diff per channel {np.array2string(err, precision=6)}")
    assert longer == ref_longer and mel.shape == ref.shape == (4, 1001, 64) and mel.dtype == np.float32
    assert err[1:].max() <= MEL_DB_TOL and err[0] <= (SHRINK_DB_TOL if longer else MEL_DB_TOL)


@pytest.mark.parametrize("n_in", [1500, 1001, 3000, 720_000])
def test_shrink_matches_torch_antialiased_bilinear(n_in):
    import torch
    import torch.nn.functional as F

    mel = np.random.default_rng(0).standard_normal((n_in, 64)).astype(np.float32) * 20
    got = audio.shrink_frames(mel)
    errs = {}
    for dtype in (torch.float64, torch.float32):  # torch's float32 kernel rounds its weights: ~1e-4 relative
        ref = F.interpolate(torch.from_numpy(mel).to(dtype)[None, None], size=(1001, 64), mode="bilinear",
                            antialias=True, align_corners=False)[0, 0].double().numpy()
        errs[str(dtype)] = float(np.abs(got - ref).max())
    print(f"shrink {n_in}->1001 max diff {errs}")
    assert errs["torch.float64"] <= 1e-5 and errs["torch.float32"] <= 1e-2


def test_chunk_rule_is_deterministic_and_one_start_per_third():
    for total in (1002, 1005, 3001, 60_001):
        starts = audio.chunk_starts(total)
        thirds = np.array_split(np.arange(total - 1001 + 1), 3)
        assert all((s in t) if len(t) else s == 0 for s, t in zip(starts, thirds))
    wave = np.random.default_rng(4).standard_normal(1_500_000).astype(np.float32) * 0.1
    np.random.seed(0)
    first, _ = _laion_mel_fusion(wave)
    np.random.seed(1)
    second, _ = _laion_mel_fusion(wave)
    np.testing.assert_array_equal(first, second)  # laion's random choice really is replaced


def test_int16_round_trip_is_idempotent_and_matches_laion():
    from laion_clap.training.data import float32_to_int16, int16_to_float32

    x = np.random.default_rng(1).uniform(-1.3, 1.3, 100_000).astype(np.float32)
    once = audio.int16_round_trip(x)
    np.testing.assert_array_equal(once, int16_to_float32(float32_to_int16(x)))
    np.testing.assert_array_equal(audio.int16_round_trip(once), once)


def _librosa_reference(path: Path) -> np.ndarray:
    import librosa

    from laion_clap.training.data import float32_to_int16, int16_to_float32

    return int16_to_float32(float32_to_int16(librosa.load(str(path), sr=48000)[0]))


def _design_reference(path: Path) -> np.ndarray:
    """librosa's decode and mono at the file's own rate, then the bundle's resampler design (not librosa's soxr:
    every client resamples with the one design; its distance to soxr is measured in tests/test_portable_audio.py)."""
    import librosa

    from bst_rt.runtime.resample import resample

    from laion_clap.training.data import float32_to_int16, int16_to_float32

    wave, rate = librosa.load(str(path), sr=None)
    return int16_to_float32(float32_to_int16(resample(wave, rate)))


def _write(path: Path, seconds: float, rate: int, channels: int) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sig = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(2).standard_normal(t.shape)
    data = np.stack([sig * (1 - 0.3 * c) for c in range(channels)], axis=1) if channels > 1 else sig
    sf.write(path, data, rate, subtype=None if path.suffix == ".ogg" else "PCM_16")
    return path


@pytest.mark.parametrize("rate,channels,fmt", [(44100, 2, "wav"), (16000, 1, "flac"), (48000, 1, "wav"), (22050, 3, "ogg")])
def test_load_audio_is_bit_identical_to_librosa_decode_and_the_design(tmp_path, rate, channels, fmt):
    """At 48 kHz bit-identical to laion-clap's librosa path; at other rates to librosa's decode + the design, and
    librosa's own length (the length rule)."""
    path = _write(tmp_path / f"clip.{fmt}", 2.3, rate, channels)
    got, ref, laion = audio.load_audio(path), _design_reference(path), _librosa_reference(path)
    assert got.dtype == np.float32 and got.shape == ref.shape == laion.shape
    np.testing.assert_array_equal(got, ref)
    if rate == 48000:
        np.testing.assert_array_equal(got, laion)


def test_length_rule_is_librosas_float_rule(tmp_path):
    """327222 samples at 22.05 kHz: exact arithmetic says 712320, librosa's float ratio gives 712321."""
    path = tmp_path / "edge.wav"
    sf.write(path, np.random.default_rng(5).standard_normal(327222) * 0.1, 22050, subtype="PCM_16")
    got, ref = audio.load_audio(path), _design_reference(path)
    assert got.shape == ref.shape == _librosa_reference(path).shape == (712321,)
    np.testing.assert_array_equal(got, ref)
    mel_file, _ = audio.file_to_mel_fusion(path)
    mel_wave, _ = audio.waveform_to_mel_fusion(got)
    np.testing.assert_array_equal(mel_file, mel_wave)


def test_block_decoding_equals_one_shot(tmp_path, monkeypatch):
    path = LIBROSA_DATA / "198-209-0000.ogg"
    whole = audio.load_audio(path)
    monkeypatch.setattr(audio, "_READ_BLOCK_FRAMES", 10_007)
    np.testing.assert_array_equal(audio.load_audio(path), whole)
    np.testing.assert_array_equal(whole, _design_reference(path))


def test_blockwise_mel_equals_single_block(monkeypatch):
    wave = audio.quantize_int16(np.random.default_rng(3).standard_normal(700_000).astype(np.float32) * 0.2)
    whole = audio.log_mel(wave)
    monkeypatch.setattr(audio, "_MEL_BLOCK_FRAMES", 97)
    np.testing.assert_allclose(audio.log_mel(wave), whole, atol=1e-4)
    assert whole.shape == (700_000 // 480 + 1, 64)


def test_bad_files_raise_audio_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wave file" * 10)
    silent = tmp_path / "no_frames.wav"
    sf.write(silent, np.zeros(0, dtype=np.float32), 16000)
    for path, why in ((empty, "empty"), (junk, "cannot decode"), (silent, "no audio samples"),
                      (tmp_path / "missing.wav", "no such")):
        with pytest.raises(AudioError, match=why) as info:
            audio.load_audio(path)
        assert str(path) in str(info.value)


def test_batch_helper_shapes():
    waves = [np.zeros(100, np.float32) + 0.1, np.ones(500_000, np.float32) * 0.01]
    mel, longer = audio.waveforms_to_mel_fusion(waves)
    assert mel.shape == (2, 4, 1001, 64) and mel.dtype == np.float32
    assert longer.tolist() == [False, True]
