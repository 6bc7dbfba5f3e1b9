"""`bst-train embed DATASET --ray`: a row source of the one embed run (`embed.embed_dataset`) on a Ray cluster.

`embed_dataset` lists what is missing (files already embedded are skipped, so a rerun resumes), refuses what it
refuses and records the encoder in `features/clap_embed.json` for every source; `RayEmbedSource` only moves the rows.
Only ids, paths and metadata text travel to the workers: each actor of a Ray Data actor pool opens the fp32 CLAP graphs
once (`embed.Encoders`, onnx engine: `bst_rt.runtime.encoders`, what a bundle runs), reads its own audio and writes
its rows straight into the official layout through `embed.embed_batch`, the local path's writer; the driver counts.
Every node must see the dataset and the graph folder at the same path (shared filesystem).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bst_rt.runtime.clip import Clip
from bst_rt.runtime.distributed import RayOptions, clip_from_row, clip_row, ensure_ray, first_line, iter_result_rows
from bst_rt.runtime.errors import BstError

from .embed import KIND_DIRS, Encoders, GraphSource, embed_batch, graph_folder, graph_provenance


def _encoders(graphs: str, provider: str, threads: int | None) -> Encoders:
    return Encoders("onnx", clap_ckpt=None, random_weights=False, seed=0, tokenizer_dir=None, graphs=Path(graphs),
                    provider=provider, threads=threads)


class EmbedActor:
    """Opens the graphs on the first batch; a batch of (kind, clip) rows -> one output row each (kind, id, status:
    'written', 'failed: <why>' for undecodable audio)."""

    def __init__(self, graphs: str, features: str, provider: str, threads: int | None) -> None:
        self._graphs, self._features, self._provider, self._threads = graphs, Path(features), provider, threads
        self._encoders: Encoders | None = None

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        if self._encoders is None:
            self._encoders = _encoders(self._graphs, self._provider, self._threads)
        kinds = [str(k) for k in batch["kind"]]
        clips = [clip_from_row({k: batch[k][i] for k in batch}) for i in range(len(kinds))]
        status: dict[tuple[str, str], str] = {}
        for kind in KIND_DIRS:  # one encoder call per kind present, as the local source batches them
            group = [c for c, k in zip(clips, kinds) if k == kind]
            if group:
                outcome = embed_batch(self._encoders, kind, group, self._features)
                status.update({(kind, c.id): "written" if why is None else f"failed: {why}"
                               for c, why in zip(group, outcome)})
        return {"kind": kinds, "id": [c.id for c in clips], "status": [status[(k, c.id)] for k, c in zip(kinds, clips)]}


def _class_texts(graphs: str, texts: list[str], provider: str, threads: int | None) -> np.ndarray:
    """The [23, 512] class-text embeddings, computed on a worker (the driver opens no graph)."""
    return np.asarray(_encoders(graphs, provider, threads).text(texts), dtype=np.float32)


class RayEmbedSource:
    """`embed.EmbedSource` on `options.concurrency` Ray actors (`embed_dataset(..., source=RayEmbedSource(...))`)."""

    engine = "onnx+ray"

    def __init__(self, options: RayOptions, *, graphs: GraphSource, provider: str = "cpu",
                 threads: int | None = None) -> None:
        self._options, self._graphs, self._provider = options, graphs, provider
        self._threads = threads if threads is not None else max(1, int(options.num_cpus))
        self._folder: Path | None = None
        self._ray: Any = None

    def start(self) -> dict:
        self._folder = graph_folder(self._graphs).resolve()
        provenance = graph_provenance(self._folder)
        self._ray = ensure_ray(self._options.address)
        return provenance

    def class_texts(self, texts: list[str]) -> np.ndarray:
        o = self._options
        task = self._ray.remote(num_cpus=o.num_cpus, num_gpus=o.num_gpus or None)(_class_texts)
        try:
            return self._ray.get(task.remote(str(self._folder), texts, self._provider, self._threads))
        except Exception as exc:
            raise BstError(f"ray: class-text embedding failed: {first_line(exc)}") from None

    def embed(self, todo: dict[str, list[Clip]], features: Path, batch_size: int,
              ) -> Iterator[tuple[str, int, int, list[str]]]:
        # audio rows first, then texts: a Ray batch is then (mostly) one kind, as in the local path
        rows = [{"kind": kind, **clip_row(c)} for kind in KIND_DIRS for c in todo[kind]]
        if not rows:
            return
        o = self._options
        dataset = self._ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size + 1,
                                                                                 4 * o.concurrency)))
        dataset = dataset.map_batches(
            EmbedActor, fn_constructor_args=(str(self._folder), str(Path(features).resolve()), self._provider,
                                             self._threads),
            batch_size=batch_size, batch_format="numpy", concurrency=o.concurrency, num_cpus=o.num_cpus,
            num_gpus=o.num_gpus or None,  # restarts + retries: Ray's defaults
        )
        for row in iter_result_rows(dataset):
            status = str(row["status"])
            written = status == "written"
            yield str(row["kind"]), 1, int(written), [] if written else [status.removeprefix("failed: ")]
