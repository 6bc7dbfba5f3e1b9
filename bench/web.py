"""The browser client's speed: `bst-rt web BUNDLE` served, the page driven in the system Chromium (headless), files
dropped; prints the page's load time (graphs downloaded, hash checked, sessions created) and the per-clip time in the
browser, beside `bst-rt classify` on the same files and whether the labels agree. With `--screenshot PNG` it also
writes the page with its results (the README's picture: `docs/web.png`).

    .venv/bin/python bench/web.py BUNDLE FILE_OR_DIR... [--system 1] [--precision int8|fp32] [--screenshot docs/web.png]

Needs /usr/bin/chromium and `cd clients/web && npm ci && npm run build`.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "clients" / "web"


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = set(info.get("Flags", "").split())
    simd = " ".join(f for f in ("sse4_2", "avx", "avx2", "avx512f", "fma") if f in flags)
    return (f"{info.get('Model name', '?').strip()}, {os.cpu_count()} CPUs ({simd}); "
            f"1-min load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--system", default="1")
    ap.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    ap.add_argument("--sidecar", type=Path)
    ap.add_argument("--screenshot", type=Path)
    args = ap.parse_args()

    from bst_rt.runtime.classify import collect_audio
    from bst_rt.runtime.web import make_server, url_of

    files = collect_audio(args.paths)
    extra = [str(args.sidecar)] if args.sidecar else []
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bst_rt.runtime", "classify", *map(str, files), "--csv", "--bundle", str(args.bundle),
           "--system", args.system, "--provider", "cpu", "--threads", "1"]
    cmd += (["--int8"] if args.precision == "int8" else []) + (["--sidecar", *extra] if extra else [])
    py = subprocess.run(cmd, capture_output=True, text=True)
    py_s = time.perf_counter() - t0
    if py.returncode != 0:
        sys.exit(py.stderr.strip())
    ref = {r["id"]: r for r in csv.DictReader(io.StringIO(py.stdout))}

    server = make_server(args.bundle, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        drive = ["node", str(WEB / "test" / "drive.mjs"), url_of(server), "--files", *map(str, files), *extra,
                 "--system", args.system, "--precision", args.precision]
        if args.screenshot:
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            drive += ["--screenshot", str(args.screenshot.resolve())]
        proc = subprocess.run(drive, capture_output=True, text=True, cwd=WEB)
    finally:
        server.shutdown()
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["refused"]:
        sys.exit(f"the page refused the bundle: {out['refused']}")
    rows, clips = out["rows"], out["timings"]["clips"]
    same = sum(r["label"] == ref[r["id"]]["label"] for r in rows)
    err = max(abs(r["score"] - float(ref[r["id"]]["score"])) for r in rows)
    audio_s = sum(c["seconds"] for c in clips)
    ms = [c["ms"] / 1000 for c in clips]
    print(f"machine: {machine()}")
    print(f"browser: {out['userAgent'].split(') ')[-1]}, cross-origin isolated {out['isolated']}; "
          f"download: {'; '.join(out['precisions'])}")
    print(f"{len(rows)} files ({audio_s:.0f} s of audio), system {args.system}, {args.precision}")
    print(f"page load (download + sha256 + sessions): {out['timings']['loadMs'] / 1000:.2f} s")
    print(f"per clip in the browser: median {statistics.median(ms):.2f} s, mean {statistics.fmean(ms):.2f} s, "
          f"max {max(ms):.2f} s; all clips {sum(ms):.1f} s")
    print(f"bst-rt classify (1 thread, incl. start-up): {py_s:.1f} s; labels equal {same}/{len(rows)}, "
          f"score max abs diff {err:.2g}")
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
