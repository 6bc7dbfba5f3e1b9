"""Peak memory of the audio front end on a long clip (default 2 hours), each path in a fresh subprocess.

    .venv/bin/python bench/long_clip.py [--hours 2] [--rate 44100] [--channels 1] [--bundle DIR] [--keep FILE]

Writes the clip block by block (never held whole here), then measures peak RSS (ru_maxrss of the child) of:
`import` (baseline: numpy, soundfile, soxr and bst_rt.runtime.audio imported), `frontend` (file -> mel_fusion, the
streaming path), `whole-waveform` (decode the whole clip as int16, then mel: the non-streaming way),
`predict-read` (what `Predictor` does per clip) and, with --bundle, a whole `bst-rt predict` over a one-clip
evaluation package, after the same with a 10 s clip (what the sessions alone take). Side by side with the size
of the 48 kHz waveform as float64 / float32 / int16 for scale.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

CHILD = {
    "import": "import bst_rt.runtime.audio",
    "frontend": (
        "import sys, numpy as np\n"
        "from bst_rt.runtime.audio import file_to_mel_fusion\n"
        "mel, longer = file_to_mel_fusion(sys.argv[1])\n"
        "assert mel.shape == (4, 1001, 64) and longer and np.isfinite(mel).all()\n"
    ),
    "whole-waveform": (
        "import sys\n"
        "from bst_rt.runtime.audio import decode_int16, waveform_to_mel_fusion\n"
        "mel, longer = waveform_to_mel_fusion(decode_int16(sys.argv[1]))\n"
    ),
    "predict-read": (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from bst_rt.runtime.predict import _read_audio\n"
        "item, reason = _read_audio(Path(sys.argv[1]))\n"
        "assert reason is None, reason\n"
    ),
}


def write_clip(path: Path, hours: float, rate: int, channels: int) -> None:
    """A chirp-plus-noise clip, written one minute at a time (so this process stays small too)."""
    rng = np.random.default_rng(0)
    total = int(hours * 3600 * rate)
    block = 60 * rate
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as out:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / rate
            tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * np.sin(t / 30)) * t)
            wave = (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)
            out.write(np.repeat(wave[:, None], channels, axis=1))


def peak_rss_mb(code: str, *args: str) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of `python -c code args` in a fresh process (Linux ru_maxrss is in KB)."""
    wrapper = (
        "import resource, runpy, sys, time\n"
        f"t0 = time.perf_counter()\nexec(compile({code!r}, '<bench>', 'exec'))\n"
        "print('RESULT', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t0)\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, check=True)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    _, rss, secs = line.split()
    return float(rss), float(secs)


def predict_rss_mb(bundle: Path, clip: Path, work: Path) -> tuple[float, float]:
    """Peak RSS of a whole `bst-rt predict` child (ru_maxrss of the waited-for child, via os.wait4)."""
    package = work / f"eval-{clip.stem}"
    (package / "audio").mkdir(parents=True, exist_ok=True)
    target = package / "audio" / "long-clip.wav"
    if not target.exists():
        os.symlink(clip.resolve(), target)
    (package / "metadata.csv").write_text("anonymous_id,title,tags,description\nlong-clip,long clip,long,two hours\n")
    exe = Path(sys.executable).with_name("bst-rt")
    errors = work / f"{clip.stem}.stderr"
    t0 = time.perf_counter()
    with open(errors, "wb") as err:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen([str(exe), "predict", str(package), "--bundle", str(bundle), "--out",
                                 str(work / f"{clip.stem}.csv"), "--force"], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bst-rt predict failed: {errors.read_text(errors='replace')[-2000:]}")
    return usage.ru_maxrss / 1024, secs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--rate", type=int, default=44100, help="source sample rate (resampled to 48 kHz)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--bundle", type=Path, help="also run `bst-rt predict` with this bundle")
    parser.add_argument("--keep", type=Path, help="write/reuse the clip here instead of a temp folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bst-long-clip-") as tmp:
        work = Path(tmp)
        clip = args.keep or work / "long.wav"
        if not clip.exists():
            t0 = time.perf_counter()
            write_clip(clip, args.hours, args.rate, args.channels)
            print(f"wrote {clip} ({clip.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        samples_48k = args.hours * 3600 * 48000
        results = {
            "clip": {"hours": args.hours, "source_rate_hz": args.rate, "channels": args.channels,
                     "file_mb": round(clip.stat().st_size / 1e6, 1)},
            "scale_mb": {"48k_float64": round(samples_48k * 8 / 2**20), "48k_float32": round(samples_48k * 4 / 2**20),
                         "48k_int16": round(samples_48k * 2 / 2**20)},
        }
        for name, code in CHILD.items():
            rss, secs = peak_rss_mb(code, str(clip))
            results[name] = {"peak_rss_mb": round(rss), "seconds": round(secs, 1)}
            print(f"{name:>19}: peak RSS {rss:8.0f} MB  {secs:7.1f} s", flush=True)
        if args.bundle is not None:  # the same package with a 10 s clip first: sessions, tokenizer, bundle checks
            short = work / "short.wav"
            write_clip(short, 10 / 3600, args.rate, args.channels)
            for name, path in (("bst-rt predict 10 s", short), ("bst-rt predict", clip)):
                rss, secs = predict_rss_mb(args.bundle, path, work)
                results[name] = {"peak_rss_mb": round(rss), "seconds": round(secs, 1)}
                print(f"{name:>19}: peak RSS {rss:8.0f} MB  {secs:7.1f} s", flush=True)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
