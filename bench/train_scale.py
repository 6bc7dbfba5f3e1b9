"""Training at BSD10k size: per-fold time sequential vs `--ray` with W workers, side by side in one run, and the
pool projections of docs/scale.md ("Training").

Data: in-memory stand-in embeddings of 10,309 clips (`bst_rt.train.synth_arrays`; real training cost, meaningless
scores), official family settings except a capped epoch count (`--epochs`, default 2) with patience off, so the
run stays short on a shared machine; per-epoch time is measured and full folds are extrapolated (marked).

    .venv/bin/python bench/train_scale.py [--families baseline,text-only] [--folds 0,1] [--epochs 2]
        [--workers 2] [--device cpu|cuda|auto] [--threads 1] [--json OUT.json]

On a GPU machine: `--device cuda` runs both modes on the GPU (Ray tasks ask for 1/W of it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from bst_rt.train.device import device_name, resolve_device
from bst_rt.train.folds import official_folds
from bst_rt.train.fold_job import train_and_write_fold
from bst_rt.train.members import resolve_families
from bst_rt.train.synth_arrays import BSD10K_CLIPS, stand_in_pool

#: projection assumptions (docs/scale.md): epochs a fold runs to early stopping (issue 16 measured 36-66 on BSD10k),
#: and each family's epoch cost relative to a clean-only epoch (extra same-size batches per step / bigger main term)
TYPICAL_EPOCHS = 50
BSD35K_CS_CLIPS = 35_000
COST = {"clean": 1.0, "teacher": 3.0, "external": 2.0, "naive": (0.8 * BSD10K_CLIPS + BSD35K_CS_CLIPS) / (0.8 * BSD10K_CLIPS)}
#: the default pool (train/configs: 14 families) by epoch cost, and the seed's 31-family / 155-checkpoint pool
DEFAULT_POOL = {"clean": 8, "teacher": 2, "external": 3, "naive": 1}
SEED_POOL_FAMILIES = 31


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_sequential(out: Path, todo, data, device) -> list[dict]:
    rows = []
    for cfg, fold in todo:
        t0 = time.perf_counter()
        scores = train_and_write_fold(out, cfg, fold, data, 0, device).scores
        rows.append({"family": cfg.name, "fold": fold.k, "seconds": time.perf_counter() - t0,
                     "epochs": scores["epochs_run"]})
    return rows


def run_ray(out: Path, todo, data, device_spec: str, workers: int) -> float:
    import ray

    from bst_rt.train.pool_ray import train_folds_ray

    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        ray.get(ray.remote(lambda: None).remote())  # workers up before the clock starts
        t0 = time.perf_counter()
        gpus = 1.0 / workers if device_spec.startswith("cuda") else None
        train_folds_ray(out, todo, data, 0, device_spec, "auto", log=lambda line: None, gpu_fraction=gpus)
        return time.perf_counter() - t0
    finally:
        ray.shutdown()


def projection(epoch_s: float, ray_speedup: float, workers: int) -> list[dict]:
    """Hours for the default and the seed's pool from a measured clean-epoch time (PROJECTED, see COST)."""
    fold_s = {k: epoch_s * c * TYPICAL_EPOCHS for k, c in COST.items()}
    default_s = sum(n * 5 * fold_s[k] for k, n in DEFAULT_POOL.items())
    mean_fold = default_s / (5 * sum(DEFAULT_POOL.values()))
    seed_s = SEED_POOL_FAMILIES * 5 * mean_fold
    rows = [{"where": "this machine, sequential", "default_h": default_s / 3600, "seed_h": seed_s / 3600}]
    rows.append({"where": f"this machine, --ray {workers} workers", "default_h": default_s / ray_speedup / 3600,
                 "seed_h": seed_s / ray_speedup / 3600})
    for nodes in (4, 16):
        slots = nodes * workers
        teacher = fold_s["clean"] / (ray_speedup / workers)  # the teacher folds run first, in parallel
        for name, total_folds in (("default_h", 5 * sum(DEFAULT_POOL.values())), ("seed_h", 5 * SEED_POOL_FAMILIES)):
            waves = math.ceil((total_folds - 5) / slots)
            rows_n = rows[-1] if rows[-1]["where"].startswith(f"{nodes} nodes") else None
            value = (teacher + waves * mean_fold / (ray_speedup / workers)) / 3600
            if rows_n is None:
                rows.append({"where": f"{nodes} nodes like this one, --ray", name: value})
            else:
                rows_n[name] = value
    return rows


def _print_projection(rows: list[dict]) -> None:
    costs = ", ".join(f"{k} x{v:.1f}" for k, v in COST.items())
    print(f"\nPROJECTED ({TYPICAL_EPOCHS} epochs a fold; epoch cost vs a clean epoch: {costs}):")
    print("| where | default pool (70 folds) h | seed pool (155 folds) h |\n|---|---|---|")
    for r in rows:
        print(f"| {r['where']} | {r['default_h']:.1f} | {r['seed_h']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="baseline,text-only")
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the sequential run (Ray tasks: 1)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--project-only", nargs=2, type=float, metavar=("EPOCH_S", "RAY_SPEEDUP"),
                    help="print only the projection from a dual-branch epoch time and a --ray speed-up")
    args = ap.parse_args()
    if args.project_only:
        _print_projection(projection(args.project_only[0], args.project_only[1], args.workers))
        return

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    data = stand_in_pool(BSD10K_CLIPS)
    gen_s = time.perf_counter() - t0
    configs = [c for c in resolve_families(args.families.split(","), {"epochs": args.epochs, "patience": 10_000})
               if c.name in args.families.split(",")]
    folds = official_folds(data.dev.labels)
    todo = [(c, folds[int(k)]) for c in configs for k in args.folds.split(",")]
    machine = f"{platform.machine()} {os.cpu_count()} cores, {device_name(device)}, torch {torch.__version__}"
    print(f"# train_scale: {len(data.dev)} stand-in clips (generated in {gen_s:.1f} s), {len(todo)} folds, "
          f"{args.epochs} epochs each; {machine}; {_load()}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        seq = run_sequential(Path(tmp) / "seq", todo, data, device)
        seq_wall = sum(r["seconds"] for r in seq)
        load_mid = _load()
        ray_wall = None if args.no_ray else run_ray(Path(tmp) / "ray", todo, data, str(device), args.workers)
    epoch_s = {c.name: sum(r["seconds"] / r["epochs"] for r in seq if r["family"] == c.name) /
               sum(1 for r in seq if r["family"] == c.name) for c in configs}
    clean_epoch = epoch_s.get("baseline", max(epoch_s.values()))  # dual-branch: most families are
    speedup = seq_wall / ray_wall if ray_wall else 1.0
    result = {"machine": machine, "load_start_mid_end": [load_mid, _load()], "clips": len(data.dev),
              "epochs_per_fold": args.epochs, "sequential_threads": args.threads, "workers": args.workers,
              "folds": seq, "sequential_wall_s": seq_wall, "ray_wall_s": ray_wall, "ray_speedup": speedup,
              "epoch_s": epoch_s, "projection_assumptions": {"typical_epochs": TYPICAL_EPOCHS, "cost": COST,
                                                              "default_pool": DEFAULT_POOL},
              "projection": projection(clean_epoch, speedup, args.workers)}
    print("| family | fold | epochs | seconds (sequential) | s / epoch |\n|---|---|---|---|---|")
    for r in seq:
        print(f"| {r['family']} | {r['fold']} | {r['epochs']} | {r['seconds']:.1f} | {r['seconds'] / r['epochs']:.2f} |")
    ray_txt = f"{ray_wall:.1f} s" if ray_wall else "not run"
    print(f"\nall {len(todo)} folds: sequential ({args.threads} thread) {seq_wall:.1f} s | --ray {args.workers} "
          f"workers (1 thread each) {ray_txt} | speed-up x{speedup:.2f}  [MEASURED; {machine}; {_load()}]")
    _print_projection(result["projection"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
