"""`bst-train embed`: CLAP embeddings of a dataset in the official `features/` layout, batched and resumable.

Writes, per clip, `features/clap_audio_embeddings/<id>.npy`, `features/clap_text_embeddings/<id>.npy` (of
`metadata_text`) and `features/clap_text_masked_embeddings/<id>.npy` (of `mask_class_words(metadata_text)`), plus
`features/clap_class_text_embeddings.npy` [23, 512] (`class_description_texts`, label order). Every file is
written atomically and existing files are skipped, so a killed run loses nothing and a rerun only does the rest.
Clips whose audio is missing or undecodable get no audio file (the runtime's text-only fallback covers them).

Engines: 'onnx' (default) runs the exported fp32 graphs through `bst_rt.runtime.encoders`, exactly what a bundle
runs at prediction time; 'torch' runs laion-clap's own pipeline (`bst_rt.train.clap` reference embedders). The
onnx engine is handed its graph folder (`graphs`): exporting them is the export floor's job (`bst_rt.export`).
"""
from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Protocol, Sequence

import numpy as np

from bst_rt.runtime.atomic import atomic_save_npy
from bst_rt.runtime.clip import Clip
from bst_rt.runtime.datasets import detect_dev_layout, read_dev_dataset, read_eval_package, safe_child
from bst_rt.runtime.errors import AudioError, BstError, DataError
from bst_rt.runtime.layout import CLASS_TEXT_FILE, EMBEDDING_DIM, EMBEDDING_DIRS, features_dir
from bst_rt.runtime.taxonomy import CLASSES, CODE_TO_INDEX
from bst_rt.runtime.text import mask_class_words

Engine = Literal["onnx", "torch"]
KIND_DIRS = EMBEDDING_DIRS
#: which encoder wrote a features/ folder; a run with another encoder refuses to add to it
RECORD_FILE = "clap_embed.json"
_IDENTITY_KEYS = ("weights", "checkpoint_sha256", "seed", "tokenizer", "tokenizer_sha256", "chunk_rule")
#: a folder of exported CLAP graphs, or a callable that returns one (called only when something is left to embed;
#: the export floor supplies it: `bst_rt.export.graph_cache.graph_source`)
GraphSource = Path | Callable[[], Path] | None


#: header of the real BSD10k taxonomy file (v1.0): metadata/BST_description.csv
BST_DESCRIPTION_COLUMNS = ("ClassKey", "ClassName", "TopLevel", "Description", "Examples")
_KEY_COLUMNS = ("classkey", "class", "code", "class_code", "label", "id")
_NAME_COLUMNS = ("classname", "name", "class_name", "subclass", "category")


def _class_text(index: int, description: str, examples: str) -> str:
    """'Name. Description.' plus ' Examples: ...' when the examples are not already part of the description."""
    text = f"{CLASSES[index].name}. {description}"
    if examples and examples.lower().rstrip(".") not in description.lower():
        text = f"{text.rstrip('.')}. Examples: {examples.rstrip('.')}."
    return text


def class_description_texts(root: Path | None = None, *, builtin_fallback: bool = False) -> list[str]:
    """The 23 class texts in label order from the dataset's metadata/BST_description.csv (the real header
    `ClassKey,ClassName,TopLevel,Description,Examples`, or the synthetic corpus' `class,name,description,examples`):
    'Name. Description' (+ ' Examples: ...'). Without the file: the built-in `bst_rt.runtime.taxonomy` texts. A file
    that is there but unreadable, or does not describe all 23 classes, is refused (DataError) unless
    `builtin_fallback` (then a warning and the built-in text for each class it lacks): the ranker's class-text
    feature must not silently use other texts than the dataset's."""
    texts = [f"{c.name}. {c.description}" for c in CLASSES]
    path = Path(root) / "metadata" / "BST_description.csv" if root is not None else None
    if path is None or not path.is_file():
        return texts

    def refuse(why: str) -> list[str]:
        if not builtin_fallback:
            raise DataError(f"{path}: {why} (expected the header {','.join(BST_DESCRIPTION_COLUMNS)}; "
                            "--builtin-class-texts uses the built-in taxonomy texts instead)")
        warnings.warn(f"{path}: {why}; using the built-in taxonomy texts for those classes",
                      RuntimeWarning, stacklevel=3)
        return texts

    by_name = {c.name.lower(): c.index for c in CLASSES}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return refuse(f"cannot read ({exc})")
    found: set[int] = set()
    for row in rows:
        low = {k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}  # no overflow
        desc = low.get("description", "") or next((v for k, v in low.items() if "description" in k and v), "")
        key = next((low[k] for k in _KEY_COLUMNS if low.get(k)), "")
        name = next((low[k] for k in _NAME_COLUMNS if low.get(k)), "")
        idx = CODE_TO_INDEX.get(key, by_name.get(key.lower(), by_name.get(name.lower())))
        if idx is not None and desc:
            texts[idx] = _class_text(idx, desc, low.get("examples", ""))
            found.add(idx)
    if len(found) < len(CLASSES):
        missing = [c.code for c in CLASSES if c.index not in found]
        return refuse(f"no usable (class, description) row for {len(missing)} of {len(CLASSES)} classes "
                      f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    return texts


@dataclass
class EmbedReport:
    root: Path
    written: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KIND_DIRS})
    skipped_existing: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KIND_DIRS})
    audio_failures: list[str] = field(default_factory=list)
    engine: str = "onnx"

    def summary(self) -> str:
        parts = [f"{k}: {self.written[k]} written, {self.skipped_existing[k]} already there" for k in KIND_DIRS]
        line = f"{self.root}/features ({self.engine}): " + "; ".join(parts)
        if self.audio_failures:
            line += f"; {len(self.audio_failures)} clip(s) without usable audio (first: {self.audio_failures[0]})"
        return line


class Encoders:
    """One engine's CLAP encoders: audio(paths) -> ([n, 512] rows for the decodable ones, their positions, failure
    messages); text(texts) -> [n, 512]. The onnx engine is `runtime.encoders` on the exported fp32 graphs."""

    def __init__(self, engine: Engine, *, clap_ckpt: Path | None, random_weights: bool, seed: int,
                 tokenizer_dir: Path | None, graphs: GraphSource, provider: str, threads: int | None,
                 device: str = "cpu") -> None:
        self.engine = engine
        if engine == "torch":
            from . import clap
            from .device import clap_to_device, resolve_device

            self._clap = clap
            self._model = clap_to_device(clap.load_clap(clap_ckpt, random_weights=random_weights, seed=seed,
                                                        tokenizer_dir=tokenizer_dir), resolve_device(device))
            self.provenance = self._model.bst_provenance.to_dict()
            return
        if device != "cpu":
            raise BstError("--device applies to the torch engine; the onnx engine takes --provider")
        if engine != "onnx":
            raise BstError(f"unknown engine {engine!r}: use onnx or torch")
        from bst_rt.runtime.encoders import AUDIO_GRAPH, TEXT_GRAPH, TOKENIZER_FILE, AudioEncoder, TextEncoder

        folder = graph_folder(graphs)
        self.provenance = graph_provenance(folder)
        self._audio = AudioEncoder(folder / AUDIO_GRAPH, provider=provider, threads=threads)  # type: ignore[arg-type]
        self._text = TextEncoder(folder / TEXT_GRAPH, folder / TOKENIZER_FILE, provider=provider,  # type: ignore[arg-type]
                                 threads=threads)

    def audio(self, paths: Sequence[Path]) -> tuple[np.ndarray, list[int], list[str]]:
        from bst_rt.runtime.audio import file_to_mel_fusion, load_audio

        ok: list[int] = []
        failures: list[str] = []
        items = []
        for i, path in enumerate(paths):
            try:
                items.append(load_audio(path) if self.engine == "torch" else file_to_mel_fusion(path))
                ok.append(i)
            except AudioError as exc:
                failures.append(str(exc))
        if not items:
            return np.zeros((0, EMBEDDING_DIM), np.float32), ok, failures
        if self.engine == "torch":
            return self._clap.reference_audio_embedding(self._model, items), ok, failures
        mel = np.stack([m for m, _ in items])
        return self._audio.embed_mel(mel, np.array([lg for _, lg in items])), ok, failures

    def text(self, texts: Sequence[str]) -> np.ndarray:
        if self.engine == "torch":
            return self._clap.reference_text_embedding(self._model, texts)
        return self._text.embed(texts)


def graph_folder(graphs: GraphSource) -> Path:
    """The CLAP graph folder the onnx engine runs: given, or made now by the caller's source."""
    if graphs is None:
        raise BstError("the onnx engine needs exported CLAP graphs: give a graph folder (--graphs DIR), or "
                       "--clap-ckpt / --random-weights for `bst-train embed` to export them")
    return Path(graphs()) if callable(graphs) else Path(graphs)


def graph_provenance(folder: Path) -> dict:
    """The encoder provenance an exported CLAP graph folder records (`clap_parity.json`), its graphs checked there."""
    from bst_rt.runtime.encoders import AUDIO_GRAPH, TEXT_GRAPH, TOKENIZER_FILE

    for name in (AUDIO_GRAPH, TEXT_GRAPH, TOKENIZER_FILE, "clap_parity.json"):
        if not (folder / name).is_file():
            raise BstError(f"{folder / name}: missing from the CLAP graph folder")
    return json.loads((folder / "clap_parity.json").read_text(encoding="utf-8")).get("provenance", {})


def _check_record(features: Path, provenance: dict, *, existing: bool, log: Callable[[str], None]) -> None:
    """Refuse to mix embeddings of two encoders in one features/ folder; record ours on first write."""
    from bst_rt.runtime.atomic import atomic_write_text

    ours = {k: provenance.get(k) for k in _IDENTITY_KEYS}
    path = features / RECORD_FILE
    if path.is_file():
        theirs = {k: json.loads(path.read_text(encoding="utf-8")).get("encoder", {}).get(k) for k in _IDENTITY_KEYS}
        if theirs != ours:
            diff = ", ".join(f"{k}: {theirs[k]} there vs {ours[k]} now" for k in _IDENTITY_KEYS if theirs[k] != ours[k])
            raise BstError(f"{features}: embeddings there were made by another CLAP encoder ({diff}); "
                           "embed into a fresh copy of the dataset or delete its features/ folder")
        return
    if existing:
        log(f"warning: {features} already holds embeddings with no {RECORD_FILE} (official features?); "
            "only the missing ones are added, by this encoder")
    features.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"encoder": ours}, indent=2) + "\n")


def read_clips(root: Path) -> list[Clip]:
    """The clips of a development set (every class, 'other' too) or of an evaluation package."""
    try:
        detect_dev_layout(root)
    except DataError:
        return read_eval_package(root).clips
    return read_dev_dataset(root, drop_other=False).clips


def _batches(items: list[Clip], size: int) -> Iterator[list[Clip]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _input_of(kind: str, clip: Clip) -> str:
    """What the text encoder sees for a text kind: THE template, or it with the class words masked."""
    return clip.text if kind == "text" else mask_class_words(clip.text)


def embed_batch(encoders: Encoders, kind: str, clips: Sequence[Clip], features: Path) -> list[str | None]:
    """Embed one batch of one kind and write each row atomically to `features/<kind dir>/<id>.npy`. Per clip: None
    when written, else why not (undecodable audio). The one writer of both sources (a Ray actor calls it)."""
    outcome: list[str | None] = [None] * len(clips)
    if kind == "audio":
        emb, ok, failures = encoders.audio([Path(c.audio_path) for c in clips])  # type: ignore[arg-type]
        for i, why in zip([i for i in range(len(clips)) if i not in set(ok)], failures):
            outcome[i] = why
    else:
        emb, ok = encoders.text([_input_of(kind, c) for c in clips]), list(range(len(clips)))
    for row, i in zip(emb, ok):
        atomic_save_npy(safe_child(features / KIND_DIRS[kind], clips[i].id, ".npy"), np.asarray(row, np.float32))
    return outcome


class EmbedSource(Protocol):
    """Where `embed_dataset`'s rows are embedded. `start()` opens the encoders (only once something is left to do)
    and returns their provenance (`RECORD_FILE`); `class_texts` embeds the class descriptions; `embed(todo,
    features, batch_size)` embeds and writes every (kind, clip) of `todo` through `embed_batch`, yielding (kind,
    rows done, rows written, failures) as batches finish, in any order."""

    engine: str

    def start(self) -> dict: ...

    def class_texts(self, texts: list[str]) -> np.ndarray: ...

    def embed(self, todo: dict[str, list[Clip]], features: Path, batch_size: int,
              ) -> Iterator[tuple[str, int, int, list[str]]]: ...


class LocalEmbedSource:
    """This process: `Encoders` of the chosen engine, one batch of one kind at a time."""

    def __init__(self, engine: Engine = "onnx", *, clap_ckpt: Path | None = None, random_weights: bool = False,
                 seed: int = 0, tokenizer_dir: Path | None = None, graphs: GraphSource = None,
                 provider: str = "cpu", threads: int | None = None, device: str = "cpu") -> None:
        self.engine = engine
        self._args = dict(clap_ckpt=clap_ckpt, random_weights=random_weights, seed=seed, tokenizer_dir=tokenizer_dir,
                          graphs=graphs, provider=provider, threads=threads, device=device)
        self._encoders: Encoders | None = None

    def start(self) -> dict:
        self._encoders = Encoders(self.engine, **self._args)  # type: ignore[arg-type]
        return self._encoders.provenance

    def class_texts(self, texts: list[str]) -> np.ndarray:
        assert self._encoders is not None, "start() first"
        return np.asarray(self._encoders.text(texts), dtype=np.float32)

    def embed(self, todo: dict[str, list[Clip]], features: Path, batch_size: int,
              ) -> Iterator[tuple[str, int, int, list[str]]]:
        assert self._encoders is not None, "start() first"
        for kind in KIND_DIRS:
            for batch in _batches(todo[kind], batch_size):
                failures = [why for why in embed_batch(self._encoders, kind, batch, features) if why is not None]
                yield kind, len(batch), len(batch) - len(failures), failures


def embed_dataset(root: Path, *, engine: Engine = "onnx", clap_ckpt: Path | None = None,
                  random_weights: bool = False, seed: int = 0, tokenizer_dir: Path | None = None,
                  graphs: GraphSource = None, batch_size: int = 8, provider: str = "cpu",
                  threads: int | None = None, progress: bool = True, device: str = "cpu",
                  builtin_class_texts: bool = False, source: EmbedSource | None = None,
                  log: Callable[[str], None] = print) -> EmbedReport:
    """Embed every clip of a development set or evaluation package under `root/features/` (see module doc).
    `source`: where the rows are embedded (default: this process, `LocalEmbedSource` of the engine arguments;
    `bst-train embed --ray` passes `embed_ray.RayEmbedSource`): the run, its refusals, what is skipped, the
    encoder record and the report are the same for every source."""
    root = Path(root)
    if batch_size < 1:
        raise BstError(f"batch size must be at least 1, got {batch_size}")
    clips = read_clips(root)
    class_texts = class_description_texts(root, builtin_fallback=builtin_class_texts)  # a bad file: refused up front
    if source is None:
        source = LocalEmbedSource(engine, clap_ckpt=clap_ckpt, random_weights=random_weights, seed=seed,
                                  tokenizer_dir=tokenizer_dir, graphs=graphs, provider=provider, threads=threads,
                                  device=device)
    features = features_dir(root)
    report = EmbedReport(root=root, engine=source.engine)
    todo: dict[str, list[Clip]] = {}
    for kind, sub in KIND_DIRS.items():
        todo[kind] = [c for c in clips if not safe_child(features / sub, c.id, ".npy").is_file()]
        report.skipped_existing[kind] = len(clips) - len(todo[kind])
    no_audio = [c for c in todo["audio"] if c.audio_path is None or not Path(c.audio_path).is_file()]
    report.audio_failures += [f"{c.id}: no audio file" for c in no_audio]
    todo["audio"] = [c for c in todo["audio"] if c not in no_audio]
    class_file = features / CLASS_TEXT_FILE
    if not any(todo.values()) and class_file.is_file():
        return report

    provenance = source.start()
    _check_record(features, provenance, existing=any(report.skipped_existing.values()), log=log)
    if not class_file.is_file():
        atomic_save_npy(class_file, np.asarray(source.class_texts(class_texts), dtype=np.float32))

    from rich.progress import Progress

    total = sum(len(v) for v in todo.values())
    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task(f"embedding {root.name}", total=total)
        for kind, done, written, failures in source.embed(todo, features, batch_size):
            report.written[kind] += written
            report.audio_failures += failures
            bar.advance(task, done)
    for failure in report.audio_failures[:5]:
        log(f"warning: {failure}")
    return report
