"""Scale-out of `bst-rt predict` on Ray Data (optional extra `[ray]`): a prediction source of the one predict run.

Only item-local decisions can be partitioned, so workers decide each batch alone: each actor of a Ray Data actor
pool holds one `Predictor`, reads its clips' audio itself (paths, never bytes, pass through the driver) and returns
one JSON record per clip and system. For an evaluation package the rows are chunks of `batch_size` consecutive
clips in metadata order (the very batches of a local run), so the encoders see the same inputs. `RaySource` hands
each finished chunk to `runtime/predict_run.py`, which journals it, and after the last one writes the CSV in
metadata order, validates it and writes the run record (with this source's `ray` section), exactly as for a local
run: so `--resume` continues a killed `--ray` run from the journal too. Ray retries a worker that dies (actor
restart + task retry); any failure it cannot retry ends in one `BstError` line and no CSV.

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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from .clip import Clip
from .defaults import DEFAULT_BATCH_SIZE
from .embedding import StageClock
from .errors import BstError, DataError

if TYPE_CHECKING:
    from .predict import Prediction, Predictor

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


def ensure_ray(address: str | None = "auto") -> Any:
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
            raise BstError(f"ray: cannot connect to {address!r}: {first_line(exc)}") from None
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    # a failed run is reported as one line by `collect`; Ray Data's own error logs would repeat it with a trace
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    return ray


def clip_row(clip: Clip) -> dict[str, Any]:
    """The fields of a clip a worker needs (`INPUT_COLUMNS`), as plain values a Ray row can hold."""
    return {"id": clip.id, "audio_path": str(clip.audio_path) if clip.audio_path else None,
            "title": clip.title, "tags": clip.tags, "description": clip.description}


def clip_from_row(row: dict[str, Any]) -> Clip:
    """`clip_row` inverted (absent or empty text fields are ''; an empty path is no audio)."""
    path = row.get("audio_path")
    return Clip(id=str(row["id"]), title=str(row.get("title") or ""), tags=str(row.get("tags") or ""),
                description=str(row.get("description") or ""), audio_path=Path(str(path)) if path else None)


def package_rows(clips: Sequence[Clip], batch_size: int) -> list[dict[str, Any]]:
    """Rows of a package's dataset: one per local batch, `index` = position of its first clip."""
    return [{"index": start, _CHUNK: json.dumps([clip_row(c) for c in clips[start:start + batch_size]])}
            for start in range(0, len(clips), batch_size)]


class PredictActor:
    """One `Predictor` per actor process, loaded on the first batch; `__call__` maps a batch of rows to one
    output row per clip and system (`index`, `system`, `id`, `label`, `score`, `fallback`, `overridden`, `record`
    = the Prediction's JSON, `worker` = JSON of pid/host/providers, `rss_mb` = the worker's peak RSS so far). The
    systems of a chunk are decided from one pass of the encoders, as in a local run."""

    def __init__(self, bundle: str, systems: Sequence[int], provider: str, threads: int | None, int8: bool,
                 batch_size: int) -> None:
        self._bundle, self._systems = bundle, [int(n) for n in systems]
        self._provider, self._threads, self._int8 = provider, threads, int8
        self._batch_size = batch_size
        self._predictor: Predictor | None = None
        self._worker = ""

    def _load(self) -> "Predictor":
        if self._predictor is None:
            from .predict import Predictor

            self._predictor = Predictor.load(self._bundle, system=self._systems[0], provider=self._provider,
                                             threads=self._threads, int8=self._int8)
            self._worker = json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                       "providers": self._predictor.all_providers}, sort_keys=True)
        return self._predictor

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        groups, first_index = _groups_of(batch, self._batch_size)
        predictor = self._load()
        out: dict[str, list[Any]] = {k: [] for k in ("index", "system", "id", "label", "score", "fallback",
                                                     "overridden", "record", "worker", "rss_mb")}
        for group, start in zip(groups, first_index):
            for by_system in predictor.predict_systems_stream([group], self._systems):
                for system, preds in by_system.items():
                    for offset, pred in enumerate(preds):
                        out["index"].append(start + offset if start is not None else -1)
                        out["system"].append(system)
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


def _groups_of(batch: dict[str, Any], batch_size: int) -> tuple[list[list[Clip]], list[int | None]]:
    """A package batch holds chunks (each one local batch); an application's batch holds one clip per row."""
    if _CHUNK in batch:
        groups = [[clip_from_row(d) for d in json.loads(str(chunk))] for chunk in batch[_CHUNK]]
        return groups, [int(i) for i in batch["index"]]
    missing = [c for c in ("id", "audio_path") if c not in batch]
    if missing:
        raise DataError(f"the dataset has no column(s) {missing}: rows need {', '.join(INPUT_COLUMNS)}")
    n = len(batch["id"])
    rows = [{k: (batch[k][i] if k in batch else "") for k in INPUT_COLUMNS} for i in range(n)]
    clips = [clip_from_row(r) for r in rows]
    index = [int(i) for i in batch["index"]] if "index" in batch else None
    groups = [clips[s:s + batch_size] for s in range(0, n, batch_size)]
    starts = [index[s] for s in range(0, n, batch_size)] if index else [None] * len(groups)
    return groups, starts


def predict_dataset(dataset_or_package: Any, bundle: str | Path, system: int = 1, *,
                    ray_options: RayOptions | None = None, provider: str = "auto", threads: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, int8: bool = False) -> Any:
    """Predictions of a Ray Dataset (rows: id, audio_path, title, tags, description; an `index` column is carried
    through) or of an evaluation package folder, as a lazy Ray Dataset with one row per clip (`PredictActor`'s
    columns). Every worker must see `bundle` and the audio paths at the same place (shared filesystem). For an
    application's own dataset; `bst-rt predict --ray` goes through `predict_run` with a `RaySource`."""
    opts = ray_options or RayOptions()
    ray = ensure_ray(opts.address)
    if batch_size < 1 or opts.concurrency < 1:
        raise BstError(f"batch size and concurrency must be >= 1, got {batch_size} and {opts.concurrency}")
    if isinstance(dataset_or_package, (str, Path)):
        from .datasets import read_eval_package

        rows = package_rows(read_eval_package(Path(dataset_or_package)).clips, batch_size)
        dataset = _package_dataset(ray, rows, opts)
        ray_batch = 1  # one chunk (= one local batch) per call: a killed worker loses one batch of work
    else:
        dataset, ray_batch = dataset_or_package, batch_size
    return _map_predict(dataset, ray_batch, opts, bundle, [system], provider, threads, batch_size, int8)


def _package_dataset(ray: Any, rows: list[dict[str, Any]], opts: RayOptions) -> Any:
    return ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * opts.concurrency)))


def _map_predict(dataset: Any, ray_batch: int, opts: RayOptions, bundle: str | Path, systems: Sequence[int],
                 provider: str, threads: int | None, batch_size: int, int8: bool) -> Any:
    """The actor pool stage; ORT threads per actor default to its CPUs (no oversubscription of a node)."""
    threads = threads if threads is not None else max(1, int(opts.num_cpus))
    return dataset.map_batches(
        PredictActor, fn_constructor_args=(str(Path(bundle).resolve()), [int(n) for n in systems], provider, threads,
                                           int8, batch_size),
        batch_size=ray_batch, batch_format="numpy", concurrency=opts.concurrency, num_cpus=opts.num_cpus,
        num_gpus=opts.num_gpus or None,  # Ray Data's actor pools default to max_restarts=-1, max_task_retries=-1
    )


def iter_result_rows(dataset: Any) -> Iterator[dict[str, Any]]:
    """The output rows streamed to the driver (small JSON records only). A failure that Ray did not retry away
    becomes one BstError line."""
    try:
        yield from dataset.iter_rows()
    except BstError:
        raise
    except Exception as exc:  # ray.exceptions.RayTaskError / UserCodeException wrap the worker's own error
        raise BstError(f"ray: the distributed run failed and could not be retried: {first_line(exc)}; "
                       "no CSV was written") from None


def collect(dataset: Any, total: int, progress: Callable[[int, int, dict[str, Any]], None] | None = None,
            ) -> list[dict[str, Any]]:
    """Every output row of `dataset` in a list; `progress(done, total, row)` per row."""
    rows: list[dict[str, Any]] = []
    for row in iter_result_rows(dataset):
        rows.append(row)
        if progress:
            progress(len(rows), total, row)
    return rows


def first_line(exc: BaseException) -> str:
    """The innermost useful message of a (wrapped) exception, on one line."""
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip() or type(seen).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    bst = [ln for ln in lines if "Error:" in ln and not ln.startswith(("Traceback", "File "))]
    line = bst[-1] if bst else lines[-1] if lines else type(seen).__name__
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+Error: )", "", line)[:500]  # 'bst_rt.runtime.errors.X' -> 'X'


class RaySource:
    """`bst-rt predict --ray`: the predict run's prediction source (`predict_run.PredictionSource`) on Ray actors.
    `start` connects (a bad address is refused before any journal is written); `predictions` yields each chunk of
    `batch_size` clips, every system, as soon as all its rows are back (chunks in completion order; the run puts
    rows in package order). `row_hook(row)`, when given, sees every raw row (tests kill a worker from it)."""

    def __init__(self, options: RayOptions, bundle_dir: Path, *, provider: str, threads: int | None, int8: bool,
                 batch_size: int, row_hook: Callable[[dict[str, Any]], None] | None = None) -> None:
        if options.concurrency < 1:
            raise BstError(f"--ray-concurrency must be >= 1, got {options.concurrency}")
        self._options, self._bundle_dir = options, Path(bundle_dir)
        self._provider, self._threads, self._int8, self._batch_size = provider, threads, int8, batch_size
        self._row_hook = row_hook
        self._ray_init_s = 0.0
        self._workers: dict[str, float] = {}  # worker JSON -> its peak RSS (MB)
        self.providers: dict[str, str] = {}

    def start(self, systems: Sequence[int], clock: StageClock) -> None:
        started = time.perf_counter()
        self._ray = ensure_ray(self._options.address)
        self._ray_init_s = time.perf_counter() - started

    def predictions(self, clips: Sequence[Clip], systems: Sequence[int], hashes: dict[str, str | None],
                    clock: StageClock) -> Iterator[dict[int, list["Prediction"]]]:
        from .predict import Prediction

        systems = [int(n) for n in systems]
        size = self._batch_size
        rows = package_rows(clips, size)
        dataset = _map_predict(_package_dataset(self._ray, rows, self._options), 1, self._options, self._bundle_dir,
                               systems, self._provider, self._threads, size, self._int8)
        pending: dict[int, dict[int, dict[int, Prediction]]] = {}  # chunk start -> system -> offset -> prediction
        for row in iter_result_rows(dataset):
            if self._row_hook:
                self._row_hook(row)
            index, system = int(row["index"]), int(row["system"])
            pred = Prediction.from_record(json.loads(str(row["record"])))
            if not 0 <= index < len(clips) or system not in systems or pred.id != clips[index].id:
                raise BstError(f"ray: a result (index {index}, id {pred.id!r}) does not match the package; "
                               "no CSV was written")
            worker = str(row["worker"])
            self._workers[worker] = max(self._workers.get(worker, 0.0), float(row["rss_mb"]))
            start = index - index % size
            chunk = pending.setdefault(start, {n: {} for n in systems})
            chunk[system][index - start] = pred
            n_clips = min(size, len(clips) - start)
            if all(len(chunk[n]) == n_clips for n in systems):
                del pending[start]
                yield {n: [chunk[n][i] for i in range(n_clips)] for n in systems}
        self.providers = _merge_providers([json.loads(w)["providers"] for w in sorted(self._workers)])

    def close(self) -> None:
        """Nothing to release: the actors end with the dataset, the Ray connection stays for the process."""

    def record_extras(self) -> dict[str, Any]:
        o = self._options
        return {"ray": {
            "address": o.address, "concurrency": o.concurrency, "num_cpus": o.num_cpus, "num_gpus": o.num_gpus,
            "ray_init_s": round(self._ray_init_s, 3),
            "workers": [{**{k: json.loads(w)[k] for k in ("host", "pid")}, "peak_rss_mb": rss}
                        for w, rss in sorted(self._workers.items())],
            "ray_version": self._ray.__version__,
        }}


def _merge_providers(per_worker: list[dict[str, str]]) -> dict[str, str]:
    """Per graph: the provider every worker used, or 'mixed' when workers differ."""
    merged: dict[str, str] = {}
    for providers in per_worker:
        for graph, used in providers.items():
            merged[graph] = used if merged.get(graph, used) == used else "mixed"
    return merged


def iter_clip_rows(clips: Iterable[Clip]) -> Iterator[dict[str, Any]]:
    """Rows for `ray.data.from_items` from clips (an application building its own dataset)."""
    for i, clip in enumerate(clips):
        yield {"index": i, **clip_row(clip)}
