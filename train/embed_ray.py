"""`bst-train embed DATASET --ray`: `bst-train embed` spread over a Ray cluster with the same exported ONNX graphs.

The driver lists what is missing (files already embedded are skipped, so a rerun resumes), records the encoder in
`features/clap_embed.json` exactly like the local path, and sends only ids, paths and texts to the workers. Each
actor of a Ray Data actor pool opens the fp32 CLAP graphs once (`bst_rt.runtime.encoders`, what a bundle runs), reads
its own audio and writes its rows straight into the official layout with `atomic_save_npy`; the driver counts.
Every node must see the dataset and the graph folder at the same path (shared filesystem).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from bst_rt.runtime.atomic import atomic_save_npy
from bst_rt.runtime.datasets import safe_child
from bst_rt.runtime.distributed import RayOptions, collect, ensure_ray
from bst_rt.runtime.errors import AudioError, BstError
from bst_rt.runtime.layout import features_dir
from bst_rt.runtime.text import mask_class_words

from .embed import CLASS_TEXT_FILE, KIND_DIRS, EmbedReport, GraphSource, _check_record, _read_clips, \
    class_description_texts, graph_folder


class EmbedActor:
    """Opens the graphs on the first batch; a batch of (kind, id, path-or-text) rows → one output row each."""

    def __init__(self, graphs: str, features: str, provider: str, threads: int | None) -> None:
        self._args = (Path(graphs), Path(features), provider, threads)
        self._audio = self._text = None

    def _encoders(self):
        if self._audio is None:
            from bst_rt.runtime.encoders import AUDIO_GRAPH, TEXT_GRAPH, TOKENIZER_FILE, AudioEncoder, TextEncoder

            graphs, _, provider, threads = self._args
            self._audio = AudioEncoder(graphs / AUDIO_GRAPH, provider=provider, threads=threads)
            self._text = TextEncoder(graphs / TEXT_GRAPH, graphs / TOKENIZER_FILE, provider=provider, threads=threads)
        return self._audio, self._text

    def __call__(self, batch: dict) -> dict:
        from bst_rt.runtime.audio import file_to_mel_fusion

        audio_enc, text_enc = self._encoders()
        features = self._args[1]
        kinds, ids, values = [str(k) for k in batch["kind"]], [str(i) for i in batch["id"]], \
            [str(v) for v in batch["value"]]
        status = [""] * len(ids)
        mels, where = [], []
        for i, (kind, value) in enumerate(zip(kinds, values)):
            if kind == "audio":
                try:
                    mels.append(file_to_mel_fusion(Path(value)))
                    where.append(i)
                except (AudioError, OSError) as exc:
                    status[i] = f"failed: {exc}"
        if mels:
            emb = audio_enc.embed_mel(np.stack([m for m, _ in mels]), np.array([lg for _, lg in mels], dtype=bool))
            for row, i in zip(emb, where):
                atomic_save_npy(safe_child(features / KIND_DIRS["audio"], ids[i], ".npy"), row.astype(np.float32))
                status[i] = "written"
        texts = [i for i, k in enumerate(kinds) if k != "audio"]
        if texts:  # text and masked text in one call: the values are already the strings the encoder sees
            emb = text_enc.embed([values[i] for i in texts])
            for row, i in zip(emb, texts):
                atomic_save_npy(safe_child(features / KIND_DIRS[kinds[i]], ids[i], ".npy"), row.astype(np.float32))
                status[i] = "written"
        return {"kind": kinds, "id": ids, "status": status}


def _class_texts(graphs: str, texts: list[str], provider: str, threads: int | None) -> np.ndarray:
    """The [23, 512] class-text embeddings, computed on a worker (the driver opens no graph)."""
    actor = EmbedActor(graphs, "", provider, threads)
    return np.asarray(actor._encoders()[1].embed(texts), dtype=np.float32)


def embed_dataset_ray(root: Path, *, ray_options: RayOptions, graphs: GraphSource = None,
                      batch_size: int = 8, provider: str = "cpu",
                      threads: int | None = None, log: Callable[[str], None] = print) -> EmbedReport:
    """Same files as `embed_dataset(root, engine='onnx', ...)`, computed by `ray_options.concurrency` actors."""
    root = Path(root)
    if batch_size < 1:
        raise BstError(f"batch size must be at least 1, got {batch_size}")
    clips = _read_clips(root)
    features = features_dir(root)
    report = EmbedReport(root=root, engine="onnx+ray")
    rows: list[dict] = []
    for kind, sub in KIND_DIRS.items():
        todo = [c for c in clips if not safe_child(features / sub, c.id, ".npy").is_file()]
        report.skipped_existing[kind] = len(clips) - len(todo)
        for c in todo:
            if kind == "audio":
                if c.audio_path is None or not Path(c.audio_path).is_file():
                    report.audio_failures.append(f"{c.id}: no audio file")
                    continue
                value = str(c.audio_path)
            else:
                value = c.text if kind == "text" else mask_class_words(c.text)
            rows.append({"kind": kind, "id": c.id, "value": value})
    class_file = features / CLASS_TEXT_FILE
    if not rows and class_file.is_file():
        return report
    folder = graph_folder(graphs)
    parity = folder / "clap_parity.json"
    if not parity.is_file():
        raise BstError(f"{parity}: missing from the CLAP graph folder")
    provenance = json.loads(parity.read_text(encoding="utf-8")).get("provenance", {})
    _check_record(features, provenance, existing=any(report.skipped_existing.values()), log=log)
    ray = ensure_ray(ray_options.address)
    threads = threads if threads is not None else max(1, int(ray_options.num_cpus))
    if not class_file.is_file():
        task = ray.remote(num_cpus=ray_options.num_cpus, num_gpus=ray_options.num_gpus or None)(_class_texts)
        try:
            table = ray.get(task.remote(str(folder.resolve()), class_description_texts(root), provider, threads))
        except Exception as exc:
            from bst_rt.runtime.distributed import _first_line

            raise BstError(f"ray: class-text embedding failed: {_first_line(exc)}") from None
        atomic_save_npy(class_file, table)
    if rows:
        # audio rows first, then texts: a Ray batch is then (mostly) one kind, as in the local path
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size + 1,
                                                                          4 * ray_options.concurrency)))
        dataset = dataset.map_batches(
            EmbedActor, fn_constructor_args=(str(folder.resolve()), str(features.resolve()), provider, threads),
            batch_size=batch_size, batch_format="numpy", concurrency=ray_options.concurrency,
            num_cpus=ray_options.num_cpus, num_gpus=ray_options.num_gpus or None,  # restarts + retries: Ray's defaults
        )
        for row in collect(dataset, len(rows)):
            if row["status"] == "written":
                report.written[str(row["kind"])] += 1
            else:
                report.audio_failures.append(str(row["status"]).removeprefix("failed: "))
    for failure in report.audio_failures[:5]:
        log(f"warning: {failure}")
    return report
