"""What the training commands of `bst-train` do (train, report, rank, dev-as-eval), as plain functions.

The app itself is `bst_rt.export.cli`: it reads the command line and calls these with typed values. They print
through `echo` and refuse with a BstError (one line), so they run the same from the app, a test or a script.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from bst_rt.runtime.atomic import atomic_write_text
from bst_rt.runtime.errors import BstError

from .bundle_chain import BundleChain
from .dev_eval import PredictionChain, TorchChain, dev_as_eval, format_table3, nested_figures
from .device import check_spec, resolve_device
from .fold_chains import FoldRespectingChain
from .pool import PoolResult, run_pool
from .progress import PoolProgress, default_progress
from .rank import RankResult, format_heldout_table, rank_run
from .report import format_report
from .run import DEV_EVAL_JSON, RANKER_DIR, REGISTRY_JSON, SYSTEMS_JSON
from .systems import RankOptions

Echo = Callable[[str], None]


def train(data: Path, out: Path, *, cs: Path | None = None, families: list[str] | None = None, seed: int = 0,
          seeds: list[int] | None = None, pool: str | None = None, overrides: dict | None = None,
          external: dict[str, Path] | None = None, threads: int = 1, device: str = "cpu", ray: str | None = None,
          ray_cpus: float = 1.0, ray_gpus: float | None = None, progress: bool = True,
          echo: Echo = print) -> PoolResult:
    """`bst-train train`: the pool on the five official folds; refuses (after writing the run) when no pool can be
    selected. `threads` is fixed, not torch's default (that follows the machine and OMP_NUM_THREADS), because the
    trained numbers depend on it."""
    torch.set_num_threads(threads)
    # fail before loading data: a bad spec, or (without Ray) a CUDA request this machine cannot honour
    device = str(resolve_device(device)) if ray is None else check_spec(device)
    bars = default_progress(progress)
    try:
        result = run_pool(data, cs, out, families, seed=seed, overrides=overrides or {}, external=external or {},
                          log=bars.print if isinstance(bars, PoolProgress) else echo, device=device, progress=bars,
                          ray=ray, seeds=seeds, pool_file=pool,
                          ray_options={"cpus": ray_cpus, "gpu_fraction": ray_gpus, "threads": threads})
    finally:
        bars.close()
    echo(f"trained on: {', '.join(result.devices) or 'nothing new (resumed)'}")
    for name, selected in result.ensembles.items():
        echo(f"ensemble {name}: hF {100 * selected.hF:.2f} ({len(selected.weights)} families)")
    echo(f"wrote {Path(out) / REGISTRY_JSON} (`bst-train report {out}` for the table)")
    if result.no_pool is not None:
        raise BstError(f"training finished without an ensemble: {result.no_pool}")
    return result


def report(run_dir: Path, echo: Echo = print) -> None:
    """`bst-train report`: the per-family table, exclusions, ensembles and the seed system's figures beside them."""
    echo(format_report(run_dir))


def rank(run_dir: Path, data: Path, opts: RankOptions, echo: Echo = print) -> RankResult:
    """`bst-train rank`: fit and freeze the ranker systems and the fold chains, then print the held-out figures."""
    result = rank_run(run_dir, data, opts, log=echo)
    nested = result.nested
    echo(f"top-12 ensemble (OOF) hF {100 * nested['ensemble_oof_hF']:.2f}")
    for sid in (1, 2):
        r, th = nested[f"system{sid}"], result.thresholds[sid]
        echo(f"system {sid} nested ranker estimate hF {100 * r['hF']:.2f} "
             f"({100 * (r['hF'] - nested['ensemble_oof_hF']):+.2f}), overrides {100 * r['override_share']:.1f}%, "
             f"fixed {r['fixed']} / broke {r['broken']}; frozen tau={th.tau} (CV override rate "
             f"{100 * th.override_share:.1f}% <= share {100 * r['max_override_share']:.1f}%) "
             f"cross-parent tau={th.cross_parent_tau} min score={th.cross_parent_min_score}")
    echo(format_heldout_table(result))
    echo(f"wrote {Path(run_dir) / RANKER_DIR} and {Path(run_dir) / SYSTEMS_JSON}")
    return result


def dev_as_eval_run(run_dir: Path, data: Path, bundle: Path | None = None, echo: Echo = print) -> dict:
    """`bst-train dev-as-eval`: the development set label-blind, each clip through the chain frozen from its own
    fold (the estimate), then through the all-folds chain or the bundle (the deployment check); writes
    RUN/dev_eval.json and returns it."""
    folds = FoldRespectingChain(run_dir, data)
    check: PredictionChain = BundleChain(bundle) if bundle is not None else TorchChain(run_dir, data)
    nested = nested_figures(run_dir)
    result = dev_as_eval(folds, data)
    echo(format_table3(result, nested, folds.policies))
    result["deployment_check"] = dev_as_eval(check, data)
    echo("\n" + format_table3(result["deployment_check"], nested, check.policies))
    atomic_write_text(Path(run_dir) / DEV_EVAL_JSON, json.dumps(result, indent=2) + "\n")
    return result
