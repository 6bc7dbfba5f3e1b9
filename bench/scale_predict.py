"""Scale-out benchmark: `bst-rt predict` locally vs on a local Ray cluster with 1 and 2 actors, side by side.

Every configuration runs in its own subprocess (fresh Ray cluster, honest peak RSS) on the same clips, bundle and
system, one ORT thread per worker (local: `--threads 1` too, and the default threads for reference). The table:
clips/s over the whole run, steady-state clips/s (after the first prediction), seconds to the first prediction
(start-up: Ray start, actor start, bundle verification and session opening), Ray's own start, peak RSS per worker,
and whether the CSV equals the local run's byte for byte. The load average is printed: the machine may be shared.

    .venv/bin/python bench/scale_predict.py --bundle B --eval EVAL_DIR [--system 3] [--clips 40] [--batch 4]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    t0 = time.perf_counter()
    from bst_rt.runtime.predict_run import RunOptions, run_predict
    mode, eval_dir, out, bundle, system, batch, threads = sys.argv[1:8]
    stamps = []
    def progress(done, total):
        if done:
            stamps.append((done, time.perf_counter() - t0))
    opts = RunOptions(eval_dir=eval_dir, out=out, bundle=bundle, system=int(system), provider="cpu",
                      threads=int(threads) if threads != "default" else None, batch_size=int(batch), force=True)
    if mode == "local":
        res = run_predict(opts, progress)
        rss, init_s = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024], 0.0
    else:
        import ray
        from dataclasses import replace
        from bst_rt.runtime.distributed import RayOptions
        workers = int(mode.removeprefix("ray"))
        t_init = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t_init
        res = run_predict(replace(opts, ray=RayOptions(concurrency=workers)), progress)
        rss = [w["peak_rss_mb"] for w in res.record["ray"]["workers"]]
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # the driver, last
    total = time.perf_counter() - t0
    first_done, first_s = stamps[0]
    steady = (stamps[-1][0] - first_done) / (stamps[-1][1] - first_s) if stamps[-1][1] > first_s else None
    print(json.dumps({"clips": res.record["rows"], "total_s": total, "first_s": first_s, "steady": steady,
                      "init_s": init_s, "rss_mb": rss}))
    """
)


def _small_package(src: Path, n: int, dest: Path) -> Path:
    meta = next(src.glob("*.csv"))
    (dest / "audio").mkdir(parents=True)
    with open(meta, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))[: n + 1]
    with open(dest / meta.name, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    for row in rows[1:]:
        if (src / "audio" / f"{row[0]}.wav").exists():
            os.symlink((src / "audio" / f"{row[0]}.wav").resolve(), dest / "audio" / f"{row[0]}.wav")
    return dest


def _run(mode: str, package: Path, out: Path, args, threads: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(package), str(out), str(args.bundle),
                           str(args.system), str(args.batch), threads], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--system", type=int, default=3)
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scale_predict_"))
    package = _small_package(args.eval, args.clips, tmp / "eval")
    load_before = os.getloadavg()
    configs = [("local, ORT default threads", "local", "default"), ("local, 1 thread", "local", "1"),
               ("ray, 1 actor x 1 thread", "ray1", "1"), ("ray, 2 actors x 1 thread", "ray2", "1")]
    results, reference = [], None
    for name, mode, threads in configs:
        out = tmp / f"{mode}-{threads}.csv"
        res = _run(mode, package, out, args, threads)
        res["same_csv"] = reference is None or out.read_bytes() == reference
        reference = reference or out.read_bytes()
        results.append((name, res))
        print(f"done: {name}", file=sys.stderr)
    load_after = os.getloadavg()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    base = results[1][1]["steady"]
    print(f"\n{args.clips} clips, batch {args.batch}, system {args.system}; {os.cpu_count()} CPUs ({cpu}); "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| run | clips/s (whole run) | clips/s (steady) | vs local 1 thread | first prediction s | ray.init s "
          "| peak RSS per worker MB | driver RSS MB | CSV = local |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results:
        workers = r["rss_mb"][:-1] if name.startswith("ray") else r["rss_mb"]
        driver = f"{r['rss_mb'][-1]:.0f}" if name.startswith("ray") else "(same process)"
        steady = r["steady"]
        print(f"| {name} | {r['clips'] / r['total_s']:.2f} | {steady:.2f} | {steady / base:.2f}x | {r['first_s']:.1f} "
              f"| {r['init_s']:.1f} | {' / '.join(f'{m:.0f}' for m in workers)} | {driver} | "
              f"{'yes' if r['same_csv'] else 'NO'} |")


if __name__ == "__main__":
    main()
