"""The Node.js client vs `bst-rt predict` side by side on one evaluation package: wall time, peak RSS, agreement.
Each runs in its own process with one ONNX thread; start-up (session creation) is included on both sides.

    .venv/bin/python bench/portable_node.py BUNDLE EVAL_DIR [--system 1]
    .venv/bin/python bench/portable_node.py BUNDLE --real-audio DIR   # the real recordings as a 44.1 kHz WAV package

With --real-audio every recording in DIR (any format libsndfile reads) is written as 44.1 kHz 16-bit WAV, the
format the task ships, so both clients decode and resample it themselves.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODE_CLIENT = Path(__file__).resolve().parents[1] / "clients" / "node" / "predict.mjs"


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS of the child in MB) via /usr/bin/time-free wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed: {proc.stderr.read()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def _rows(path: Path) -> dict[str, tuple[str, float]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["id"]: (r["predicted_bst_second_level_class"], float(r["prediction_score"])) for r in csv.DictReader(fh)}


def _real_package(audio_dir: Path, root: Path) -> Path:
    """The recordings of `audio_dir` as a 44.1 kHz, 16-bit WAV evaluation package (metadata: the file stem)."""
    import numpy as np
    import soundfile as sf
    import soxr

    (root / "audio").mkdir(parents=True)
    rows = []
    for k, path in enumerate(sorted(p for p in audio_dir.iterdir() if p.suffix.lower() in (".ogg", ".wav", ".flac"))):
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wave = soxr.resample(data, rate, 44100, quality="HQ")
        sf.write(root / "audio" / f"real-{k:02d}.wav", np.clip(wave, -1, 1), 44100, subtype="PCM_16")
        rows.append((f"real-{k:02d}", path.stem.replace("_", " "), "recording", ""))
    with open(root / "eval_metadata.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("anonymous_id", "title", "tags", "description"))
        writer.writerows(rows)
    return root


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
        flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
        model += f" ({', '.join(f for f in ('avx2', 'avx512f', 'fma') if f in flags) or 'no avx2'})"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{model}, {os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("eval_dir", nargs="?")
    ap.add_argument("--real-audio", type=Path, help="build a 44.1 kHz WAV package from these recordings")
    ap.add_argument("--system", default="1")
    args = ap.parse_args()
    if (args.eval_dir is None) == (args.real_audio is None):
        sys.exit("give EVAL_DIR or --real-audio DIR")
    with tempfile.TemporaryDirectory() as tmp:
        if args.real_audio is not None:
            args.eval_dir = str(_real_package(args.real_audio, Path(tmp) / "real44k"))
        py_csv, node_csv = Path(tmp) / "py.csv", Path(tmp) / "node.csv"
        py = _timed([sys.executable, "-m", "bst_rt.runtime", "predict", args.eval_dir, "--bundle", args.bundle, "-o",
                     str(py_csv), "--system", args.system, "--threads", "1", "--provider", "cpu"])
        node = _timed(["node", str(NODE_CLIENT), args.bundle, args.eval_dir, str(node_csv), "--system", args.system])
        a, b = _rows(py_csv), _rows(node_csv)
    same = sum(a[k][0] == b.get(k, ("",))[0] for k in a)
    err = max(abs(a[k][1] - b[k][1]) for k in a if k in b)
    print(f"machine: {_machine()}; {len(a)} clips, system {args.system}")
    print(f"{'client':<16}{'wall s':>8}{'peak RSS MB':>13}")
    print(f"{'bst-rt predict':<16}{py[0]:>8.1f}{py[1]:>13.0f}")
    print(f"{'node client':<16}{node[0]:>8.1f}{node[1]:>13.0f}")
    print(f"node / python: time x{node[0] / py[0]:.2f}, RSS x{node[1] / py[1]:.2f}; labels equal {same}/{len(a)}, "
          f"score max abs diff {err:.2g}")


if __name__ == "__main__":
    main()
