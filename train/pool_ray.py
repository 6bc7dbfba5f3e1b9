"""The pool spread over Ray (`bst-train train ... --ray auto|ADDRESS`): every missing (family, fold) is one Ray task.

- Resource request per task: `cpus` CPU cores, plus a GPU fraction on CUDA so several small models share a GPU.
- Order: a student fold k is submitted with the teacher's fold-k task as an argument, so Ray starts it only after
  the teacher fold is written (the student reads the teacher's checkpoint from the run folder, as sequentially).
- The run folder stays the single source of truth: each task calls `fold_job.train_and_write_fold`, which writes the
  fold folder (every file atomic, `fold.json` last) exactly as a sequential run does. Nothing else travels back
  but the scores; `train_pool` then reads every fold from disk and builds OOF, registry and ensembles the same way.
  A killed worker's fold has no `fold.json`, so Ray's retry or the next `bst-train train` simply trains it again.
- Same results as sequential on CPU (tests/test_train_scale.py): same seeds, same code, one torch thread per task.

`auto` connects to a running cluster (RAY_ADDRESS or `ray start` on this machine) or starts a local one;
an ADDRESS connects there. A Ray already initialised by the caller (tests: `ray.init(num_cpus=2)`) is used as is.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import torch

from bst_rt.runtime.errors import BstError

from .data import PoolData
from .device import device_name, resolve_device
from .families import FamilyConfig
from .fold_job import train_and_write_fold
from .folds import Fold
from .progress import NullProgress

#: each CUDA fold task asks for this share of one GPU (the families are small MLPs)
DEFAULT_GPU_FRACTION = 0.25


def _require_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise BstError("--ray needs Ray: pip install 'bst-rt[ray]'") from None
    return ray


def connect(address: str) -> ModuleType:
    """Initialise Ray once: 'auto' = an existing cluster or a new local one; anything else = that address."""
    ray = _require_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "auto" else address, logging_level="ERROR",
                     log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BstError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0]})") from None
    return ray


def _fold_task(out: str, cfg: dict, fold: Fold, data: PoolData, seed: int, device_spec: str, threads: int,
               *_after: Any) -> tuple[str, int, dict, str]:
    """One (family, fold) in a Ray worker: the sequential loop's fold job, one torch thread; only the scores travel
    back (the held-out probabilities are in the fold folder)."""
    torch.set_num_threads(threads)
    device = resolve_device(device_spec)
    written = train_and_write_fold(Path(out), FamilyConfig(**cfg), fold, data, seed, device)
    return cfg["name"], fold.k, written.scores, device_name(device)


def _task_options(ray: ModuleType, device_spec: str, cpus: float, gpu_fraction: float | None) -> tuple[dict, str]:
    """Ray resource request and the device spec the workers resolve ('auto' uses GPUs only if the cluster has some)."""
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    if device_spec == "auto":
        device_spec = "cuda" if has_gpu else "cpu"
    if device_spec.startswith("cuda"):
        if not has_gpu:
            raise BstError(f"--device {device_spec} with --ray: the Ray cluster has no GPU")
        return {"num_cpus": cpus, "num_gpus": gpu_fraction or DEFAULT_GPU_FRACTION}, "cuda"  # Ray picks the GPU
    return {"num_cpus": cpus}, device_spec


def train_folds_ray(out: Path, todo: Sequence[tuple[FamilyConfig, Fold]], data: PoolData,
                    seed: int | Mapping[str, int], device_spec: str, address: str, *,
                    progress: NullProgress | None = None, log: Callable[[str], None] = print, cpus: float = 1,
                    gpu_fraction: float | None = None, threads: int = 1) -> tuple[list[tuple[str, int]], set[str]]:
    """Train every (family, fold) of `todo` as Ray tasks, teacher folds before their students' folds.
    Returns the (family, fold) pairs trained, in completion order, and the devices that ran them."""
    if not todo:
        return [], set()
    ray = connect(address)
    options, spec = _task_options(ray, device_spec, cpus, gpu_fraction)
    remote = ray.remote(max_retries=2)(_fold_task).options(**options)
    data_ref = ray.put(data)
    refs: dict = {}
    labels: dict = {}
    for cfg, fold in todo:  # todo is in training order: teachers first
        after = []
        if cfg.cs.mode == "teacher" and (cfg.cs.teacher, fold.k) in refs:
            after.append(refs[(cfg.cs.teacher, fold.k)])
        member_seed = seed if isinstance(seed, int) else seed[cfg.name]  # family@s trains at its own seed
        ref = remote.remote(str(out), cfg.to_dict(), fold, data_ref, member_seed, spec, threads, *after)
        refs[(cfg.name, fold.k)] = ref
        labels[ref] = (cfg.name, fold.k)
    pending, trained, devices = list(refs.values()), [], set()
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            family, k, scores, ran_on = _get(ray, done[0], labels[done[0]])
            trained.append((family, k))
            devices.add(f"{ran_on} via ray")
            if progress is not None:
                progress.fold_done(family, k)
            log(f"{family} fold {k + 1}: hF {scores['hF']:.4f} (epochs {scores['epochs_run']}, "
                f"T {scores['temperature']:.2f}) [ray]")
    finally:
        for ref in pending:
            ray.cancel(ref)
    return trained, devices


def _get(ray: ModuleType, ref: Any, label: tuple[str, int]) -> tuple[str, int, dict, str]:
    """The task's result, or its failure as one line (a BstError inside a task stays a BstError)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BstError):
            raise cause from None
        raise BstError(f"{label[0]} fold {label[1] + 1}: Ray task failed ({type(cause or exc).__name__}: "
                       f"{str(cause or exc).splitlines()[0]})") from None
    except ray.exceptions.RayError as exc:
        raise BstError(f"{label[0]} fold {label[1] + 1}: Ray task lost ({type(exc).__name__}); completed folds are "
                       "kept in the run folder: run `bst-train train` again to resume") from None
