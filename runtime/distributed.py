"""Scale-out of `bst-rt predict` on Ray Data (optional extra `[ray]`): the same CSV from one machine or a cluster.

Only item-local decisions can be partitioned, so workers use the per-item path (`Predictor.predict_clips`): each
actor of a Ray Data actor pool holds one `Predictor`, reads its clips' audio itself (paths, never bytes, pass
through the driver) and returns one JSON record per clip. For an evaluation package the rows are chunks of
`batch_size` consecutive clips in metadata order — the very batches of a local run — so the encoders see the same
inputs; the driver puts the records back in metadata order and writes the CSV and run record with
`runtime/batch.py`'s writers (atomically, then validated). Ray retries a worker that dies (actor restart + task
retry); any failure it cannot retry ends in one `BstError` line and no CSV.

`ray` is imported inside the functions only: `import bst_rt.runtime` never imports it (a test enforces that).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .datasets import Clip
from .embedding import StageClock
from .defaults import DEFAULT_BATCH_SIZE
from .errors import BstError

#: columns of a row of an application's own Ray Dataset (title, tags, description may be absent: empty)
INPUT_COLUMNS = ("id", "audio_path", "title", "tags", "description")
_CHUNK = "clips"  # column of a package row: a JSON list of `batch_size` clips (one local batch)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` 'auto' joins a running cluster or starts a local one; `concurrency` actors,
    each with `num_cpus` CPUs (its ORT thread count unless `threads` is given) and `num_gpus` GPUs."""

    address: str = "auto"
    concurrency: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def ensure_ray(address: str = "auto"):
    """Import ray (a one-line error without the extra) and connect unless this process already is."""
    try:
        import ray
    except ImportError:
        raise BstError("--ray needs the optional extra: pip install 'bst-rt[ray]'") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
        if address not in ("auto", "", None):
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except Exception as exc:  # ConnectionError, RuntimeError, ...: whatever ray raises for a bad address
            raise BstError(f"ray: cannot connect to {address!r}: {_first_line(exc)}") from None
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    # a failed run is reported as one line by `collect`; Ray Data's own error logs would repeat it with a trace
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    return ray


def _clip_dict(clip: Clip) -> dict:
    return {"id": clip.id, "audio_path": str(clip.audio_path) if clip.audio_path else None,
            "title": clip.title, "tags": clip.tags, "description": clip.description}


def _clip_from(row: dict) -> Clip:
    path = row.get("audio_path")
    return Clip(id=str(row["id"]), title=str(row.get("title") or ""), tags=str(row.get("tags") or ""),
                description=str(row.get("description") or ""), audio_path=Path(str(path)) if path else None)


def package_rows(clips: Sequence[Clip], batch_size: int) -> list[dict]:
    """Rows of a package's dataset: one per local batch, `index` = position of its first clip."""
    return [{"index": start, _CHUNK: json.dumps([_clip_dict(c) for c in clips[start:start + batch_size]])}
            for start in range(0, len(clips), batch_size)]


class PredictActor:
    """One `Predictor` per actor process, loaded on the first batch; `__call__` maps a batch of rows to one
    output row per clip (`index`, `id`, `label`, `score`, `fallback`, `overridden`, `record` = the Prediction's
    JSON, `worker` = JSON of pid/host/providers, `rss_mb` = the worker's peak RSS so far)."""

    def __init__(self, bundle: str, system: int, provider: str, threads: int | None, int8: bool,
                 batch_size: int) -> None:
        self._args = (bundle, system, provider, threads, int8)
        self._batch_size = batch_size
        self._predictor = None
        self._worker = ""

    def _load(self):
        if self._predictor is None:
            from .predict import Predictor

            bundle, system, provider, threads, int8 = self._args
            self._predictor = Predictor.load(bundle, system=system, provider=provider, threads=threads, int8=int8)
            self._worker = json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                       "providers": self._predictor.providers}, sort_keys=True)
        return self._predictor

    def __call__(self, batch: dict) -> dict:
        groups, first_index = _groups_of(batch, self._batch_size)
        predictor = self._load()
        out: dict[str, list] = {k: [] for k in ("index", "id", "label", "score", "fallback", "overridden",
                                                "record", "worker", "rss_mb")}
        for group, start in zip(groups, first_index):
            for offset, pred in enumerate(predictor.predict_clips(group, batch_size=len(group))):
                out["index"].append(start + offset if start is not None else -1)
                out["id"].append(pred.id)
                out["label"].append(pred.label)
                out["score"].append(pred.score)
                out["fallback"].append(pred.fallback or "")
                out["overridden"].append(pred.overridden)
                out["record"].append(json.dumps(pred.to_record()))
                out["worker"].append(self._worker)
        out["rss_mb"] = [_peak_rss_mb()] * len(out["id"])  # this worker's peak so far (the bench reads it)
        return out


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _groups_of(batch: dict, batch_size: int) -> tuple[list[list[Clip]], list[int | None]]:
    """A package batch holds chunks (each one local batch); an application's batch holds one clip per row."""
    if _CHUNK in batch:
        groups = [[_clip_from(d) for d in json.loads(str(chunk))] for chunk in batch[_CHUNK]]
        return groups, [int(i) for i in batch["index"]]
    missing = [c for c in ("id", "audio_path") if c not in batch]
    if missing:
        from .errors import DataError

        raise DataError(f"the dataset has no column(s) {missing}: rows need {', '.join(INPUT_COLUMNS)}")
    n = len(batch["id"])
    rows = [{k: (batch[k][i] if k in batch else "") for k in INPUT_COLUMNS} for i in range(n)]
    clips = [_clip_from(r) for r in rows]
    index = [int(i) for i in batch["index"]] if "index" in batch else None
    groups = [clips[s:s + batch_size] for s in range(0, n, batch_size)]
    starts = [index[s] for s in range(0, n, batch_size)] if index else [None] * len(groups)
    return groups, starts


def predict_dataset(dataset_or_package, bundle: str | Path, system: int = 1, *, ray_options: RayOptions | None = None,
                    provider: str = "auto", threads: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, int8: bool = False):
    """Predictions of a Ray Dataset (rows: id, audio_path, title, tags, description; an `index` column is carried
    through) or of an evaluation package folder, as a lazy Ray Dataset with one row per clip. Every worker must
    see `bundle` and the audio paths at the same place (shared filesystem)."""
    opts = ray_options or RayOptions()
    ray = ensure_ray(opts.address)
    if batch_size < 1 or opts.concurrency < 1:
        raise BstError(f"batch size and concurrency must be >= 1, got {batch_size} and {opts.concurrency}")
    if isinstance(dataset_or_package, (str, Path)):
        from .datasets import read_eval_package

        rows = package_rows(read_eval_package(Path(dataset_or_package)).clips, batch_size)
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * opts.concurrency)))
        ray_batch = 1  # one chunk (= one local batch) per call: a killed worker loses one batch of work
    else:
        dataset, ray_batch = dataset_or_package, batch_size
    return _map_predict(dataset, ray_batch, opts, bundle, system, provider, threads, batch_size, int8)


def _map_predict(dataset, ray_batch: int, opts: RayOptions, bundle, system, provider, threads, batch_size, int8):
    """The actor pool stage; ORT threads per actor default to its CPUs (no oversubscription of a node)."""
    threads = threads if threads is not None else max(1, int(opts.num_cpus))
    return dataset.map_batches(
        PredictActor, fn_constructor_args=(str(Path(bundle).resolve()), int(system), provider, threads, int8,
                                           batch_size),
        batch_size=ray_batch, batch_format="numpy", concurrency=opts.concurrency, num_cpus=opts.num_cpus,
        num_gpus=opts.num_gpus or None,  # Ray Data's actor pools default to max_restarts=-1, max_task_retries=-1
    )


def collect(dataset, total: int, progress: Callable[[int, int, dict], None] | None = None) -> list[dict]:
    """Stream the output rows to the driver (small JSON records only); `progress(done, total, row)` per row.
    A failure that Ray did not retry away becomes one BstError line."""
    rows: list[dict] = []
    try:
        for row in dataset.iter_rows():
            rows.append(row)
            if progress:
                progress(len(rows), total, row)
    except BstError:
        raise
    except Exception as exc:  # ray.exceptions.RayTaskError / UserCodeException wrap the worker's own error
        raise BstError(f"ray: the distributed run failed and could not be retried: {_first_line(exc)}; "
                       "no CSV was written") from None
    return rows


def _first_line(exc: BaseException) -> str:
    """The innermost useful message of a (wrapped) exception, on one line."""
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip() or type(seen).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    bst = [ln for ln in lines if "Error:" in ln and not ln.startswith(("Traceback", "File "))]
    line = bst[-1] if bst else lines[-1] if lines else type(seen).__name__
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+Error: )", "", line)[:500]  # 'bst_rt.runtime.errors.X' -> 'X'



@dataclass
class _DriverView:
    """What the run record and meta.yaml read from a predictor, without opening any session on the driver."""

    bundle: Any
    system: int
    policy: Any
    int8: bool
    providers: dict[str, str]

    @property
    def provider(self) -> str:
        used = set(self.providers.values())
        return used.pop() if len(used) == 1 else "mixed"


def run_predict_ray(opts, ray_options: RayOptions,
                    progress: Callable[[int, int], None] | None = None):
    """`bst-rt predict --ray`: `runtime.batch.run_predict` with the items spread over a Ray cluster; the same CSV,
    validation and run record (plus a `ray` section). No journal: Ray retries lost work itself."""
    from . import batch as batch_module
    from .bundle import load_bundle, resolve_bundle_dir, sha256_file
    from .datasets import read_eval_package
    from .errors import DataError
    from .policy import SystemPolicy
    from .predict import Prediction
    from .submission import validate_submission, write_submission

    out = Path(opts.out)
    if out.exists() and not opts.force:
        raise BstError(f"{out}: exists; pass --force to overwrite it")
    if opts.resume:
        raise BstError("--resume is for local runs; a --ray run retries lost work itself (rerun it to start over)")
    if opts.batch_size < 1:
        raise BstError(f"--batch-size must be >= 1, got {opts.batch_size}")
    package = read_eval_package(opts.eval_dir, opts.metadata)
    if not package.clips:
        raise DataError(f"{package.metadata_path}: no clips in the evaluation package")
    bundle_dir = resolve_bundle_dir(opts.bundle)
    bundle = load_bundle(bundle_dir)  # verified once here, so a bad bundle fails before any worker starts
    m = bundle.manifest
    if str(opts.system) not in m.systems:
        raise BstError(f"{bundle.root}: no system {opts.system} (bundle has {', '.join(sorted(m.systems))})")
    if opts.int8 and not bundle.has_int8():
        raise BstError(f"{bundle.root}: no int8 graphs in this bundle (re-export with `bst-train export --int8`)")
    started = time.perf_counter()
    ensure_ray(ray_options.address)
    ray_started = time.perf_counter() - started
    rows = package_rows(package.clips, opts.batch_size)
    import ray

    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * ray_options.concurrency)))
    dataset = _map_predict(dataset, 1, ray_options, bundle_dir, opts.system, opts.provider, opts.threads,
                           opts.batch_size, opts.int8)
    state = {"first": None}

    def on_row(done: int, total: int, row: dict) -> None:
        if state["first"] is None:
            state["first"] = time.perf_counter() - started
        if progress:
            progress(done, total)

    if progress:
        progress(0, len(package.clips))
    results = collect(dataset, len(package.clips), on_row)
    elapsed = time.perf_counter() - started
    by_index = {int(r["index"]): r for r in results}
    if sorted(by_index) != list(range(len(package.clips))) or len(results) != len(package.clips):
        raise BstError(f"ray: {len(by_index)} distinct results for {len(package.clips)} clips; no CSV was written")
    ordered = [by_index[i] for i in range(len(package.clips))]
    final = [Prediction.from_record(json.loads(r["record"])) for r in ordered]
    if [p.id for p in final] != package.ids:
        raise BstError("ray: results do not match the package's ids; no CSV was written")
    workers = sorted({r["worker"] for r in ordered})
    providers = _merge_providers([json.loads(w)["providers"] for w in workers])
    view = _DriverView(bundle, int(opts.system), SystemPolicy.from_dict(m.systems[str(opts.system)]), opts.int8,
                       providers)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_submission(out, ((p.id, p.label, p.score) for p in final))
    validate_submission(out, package.ids)
    meta_sha = sha256_file(package.metadata_path)
    # the driver hashes the audio for the run record's digest after the CSV is written (workers do not return bytes)
    record = batch_module._run_record(opts, view, package, final, meta_sha, elapsed, state["first"], 0, bundle_dir, {}, out,
                           StageClock())
    record["ray"] = {
        "address": ray_options.address, "concurrency": ray_options.concurrency, "num_cpus": ray_options.num_cpus,
        "num_gpus": ray_options.num_gpus, "ray_init_s": round(ray_started, 3),
        "workers": [{**{k: json.loads(w)[k] for k in ("host", "pid")},
                     "peak_rss_mb": max(float(r["rss_mb"]) for r in ordered if r["worker"] == w)} for w in workers],
        "ray_version": _ray_version(),
    }
    if opts.check_overlap is not None:
        record["overlap"] = {"data_dir": str(opts.check_overlap),
                             "clips": batch_module.find_overlap(package.clips, opts.check_overlap)}
    from .atomic import atomic_write_text

    atomic_write_text(batch_module.record_path(out), json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    if opts.meta_yaml:
        batch_module._write_meta(out, view, opts)
    return batch_module.RunResult(out, record, final)


def _merge_providers(per_worker: list[dict[str, str]]) -> dict[str, str]:
    """Per graph: the provider every worker used, or 'mixed' when workers differ."""
    merged: dict[str, str] = {}
    for providers in per_worker:
        for graph, used in providers.items():
            merged[graph] = used if merged.get(graph, used) == used else "mixed"
    return merged


def _ray_version() -> str:
    import ray

    return ray.__version__


def iter_clip_rows(clips: Sequence[Clip]) -> Iterator[dict]:
    """Rows for `ray.data.from_items` from clips (an application building its own dataset)."""
    for i, clip in enumerate(clips):
        yield {"index": i, **_clip_dict(clip)}
