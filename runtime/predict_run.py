"""The `bst-rt predict` run: an evaluation package in, a validated submission CSV and its run record out.

One run, three steps, whatever computes the predictions:
- `_prepare`: every refusal (existing output or journal, batch size, the meta.yaml label and authors, the package
  read with `strict_metadata`, an empty package, the bundle's hashes, its systems and int8 graphs), then the
  journals. Nothing is predicted before all of them pass.
- a prediction source: `LocalSource` (this process: `Predictor.predict_systems_stream`, a batch of clips at a time)
  or `distributed.RaySource` (Ray Data actors, `--ray`). A source yields `{system: [Prediction]}` for one batch of
  clips at a time, in any batch order, and afterwards says which providers ran and what it adds to the run record.
- `_finish`: per system, the CSV in package order (atomically), its validation, the run record, meta.yaml, and the
  journal removed.

Crash safety: each batch's predictions are appended to a journal beside the output (`OUT.partial.jsonl`, fsynced per
batch), so `--resume` continues a killed run without redoing finished items, with either source. Decisions are
item-local, so a resumed run (any batch size, any source) writes the same rows as an uninterrupted one.
Traceability: `OUT.run.json` names the bundle, system, provider in use, package versions, the sha256 of the
metadata file, a digest of the audio, and row and fallback counts (docs/reliability.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from .atomic import atomic_write_text
from .bundle import Bundle, load_bundle, resolve_bundle_dir
from .clip import Clip
from .datasets import AUDIO_SUFFIXES, EvalPackage, read_eval_package
from .defaults import DEFAULT_BATCH_SIZE
from .embedding import StageClock
from .errors import BstError, DataError
from .hashing import file_sha256
from .policy import SystemPolicy
from .predict import Prediction, Predictor
from .provenance import package_versions
from .session import overall_provider
from .submission import validate_submission, write_submission
from .taxonomy import CODES

if TYPE_CHECKING:
    from .distributed import RayOptions

#: `progress(done, total)`: items finished (for every system) out of the package's
Progress = Callable[[int, int], None]
JOURNAL_FORMAT = "bst-rt-predict-v2"


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def record_path(out: Path) -> Path:
    return out.with_name(out.stem + ".run.json")


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hash_or_none(path: Path | None) -> str | None:
    """sha256 of a regular file; None when absent or unreadable (that clip already fell back: the record must not
    fail after the CSV was written)."""
    try:
        return file_sha256(path) if path is not None and path.is_file() else None
    except OSError:
        return None


def audio_digest(clips: Sequence[Clip], known: dict[str, str | None] | None = None) -> str:
    """sha256 over 'id sha256-of-file' lines in package order ('-' for a missing or unreadable file). `known`:
    hashes the prediction pass already took (id -> sha256 or None); only the other clips are read here."""
    known = known or {}
    digest = hashlib.sha256()
    for clip in clips:
        h = known[clip.id] if clip.id in known else _hash_or_none(clip.audio_path)
        digest.update(f"{clip.id} {h or '-'}\n".encode())
    return digest.hexdigest()


def find_overlap(clips: Sequence[Clip], data_dir: Path) -> list[dict[str, str]]:
    """Evaluation clips whose audio bytes equal a file under `data_dir` (content hash, any sub-folder)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: --check-overlap needs a dataset folder")
    by_hash: dict[str, str] = {}
    for path in sorted(data_dir.rglob("*")):
        if path.suffix.lower() in AUDIO_SUFFIXES and (h := _hash_or_none(path)) not in (None, _EMPTY_SHA256):
            by_hash.setdefault(h, str(path.relative_to(data_dir)))
    hits = []
    for clip in clips:
        h = _hash_or_none(clip.audio_path)
        match = by_hash.get(h) if h not in (None, _EMPTY_SHA256) else None  # empty files are all "equal"
        if match:
            hits.append({"id": clip.id, "matches": match})
    return hits


@dataclass(kw_only=True)
class RunOptions:
    """Every option of `bst-rt predict`; keyword-only, so a call site names what it sets."""

    eval_dir: Path
    out: Path
    bundle: Path | None = None
    system: int | str = 1  # "all": every system of the bundle (run_predict_systems)
    provider: str = "auto"
    threads: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    int8: bool = False
    resume: bool = False
    force: bool = False
    meta_yaml: bool = False
    check_overlap: Path | None = None
    metadata: Path | None = None
    strict_metadata: bool = False  # refuse a metadata row that is not UTF-8 instead of repairing it
    authors: tuple[str, ...] = ()  # meta.yaml: "First Last <email>", the first is the corresponding author
    institution: str = ""
    ray: "RayOptions | None" = None  # the prediction source: None = this process, else Ray actors (distributed.py)


@dataclass
class RunResult:
    out: Path
    record: dict[str, Any]
    predictions: list[Prediction] = field(default_factory=list)


class PredictionSource(Protocol):
    """Where a run's predictions come from. `start` opens what the source needs (sessions, a Ray connection) and
    refuses what it cannot do, before any journal is written. `predictions` yields `{system: [Prediction]}` for one
    batch of `clips` at a time (every system for the same clips, batches in any order); `hashes` may be filled with
    the audio sha256 it took while reading (id -> sha256 or None) and `clock` with its stage times. Once it is
    exhausted, `providers` are the providers that really ran (per graph) and `record_extras()` what the run record
    adds; `close()` releases what `start` opened."""

    providers: dict[str, str]

    def start(self, systems: Sequence[int], clock: StageClock) -> None: ...

    def predictions(self, clips: Sequence[Clip], systems: Sequence[int], hashes: dict[str, str | None],
                    clock: StageClock) -> Iterator[dict[int, list[Prediction]]]: ...

    def record_extras(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalSource:
    """This process: one `Predictor` (the bundle's sessions), batches of `batch_size` clips through
    `predict_systems_stream` (one pass of the encoders and heads for every system)."""

    def __init__(self, bundle: Bundle, opts: RunOptions) -> None:
        self._bundle, self._opts = bundle, opts
        self._predictor: Predictor | None = None
        self.providers: dict[str, str] = {}

    def start(self, systems: Sequence[int], clock: StageClock) -> None:
        opts = self._opts
        with clock.stage("bundle check + sessions"):
            self._predictor = Predictor.load(self._bundle, system=systems[0], provider=opts.provider,
                                             threads=opts.threads, int8=opts.int8)
        self.providers = self._predictor.all_providers  # what really runs, also when nothing is left to predict

    def predictions(self, clips: Sequence[Clip], systems: Sequence[int], hashes: dict[str, str | None],
                    clock: StageClock) -> Iterator[dict[int, list[Prediction]]]:
        if self._predictor is None:
            raise BstError("LocalSource.predictions before start()")
        size = self._opts.batch_size
        batches = (clips[start:start + size] for start in range(0, len(clips), size))
        yield from self._predictor.predict_systems_stream(batches, systems, hashes, clock)

    def record_extras(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        if self._predictor is not None:
            self._predictor.close()


def system_output(out: Path, system: int) -> Path:
    """The CSV of one system under `--system all`: '{system}' in the name is replaced by the number, else '_N'
    goes before '.output.csv' (DCASE's `..._task1_N.output.csv`) or before the suffix."""
    out = Path(out)
    if "{system}" in out.name:
        return out.with_name(out.name.replace("{system}", str(system)))
    for end in (".output.csv", out.suffix):
        if end and out.name.endswith(end):
            return out.with_name(f"{out.name[: -len(end)]}_{system}{end}")
    return out.with_name(f"{out.name}_{system}")


def run_predict(opts: RunOptions, progress: Progress | None = None) -> RunResult:
    """The whole command for one system; `progress(done, total)` is called after every batch."""
    if opts.system == "all":
        raise BstError("run_predict writes one system; use run_predict_systems for --system all")
    system = int(opts.system)
    return _run(opts, lambda bundle: {system: Path(opts.out)}, progress)[system]


def run_predict_systems(opts: RunOptions, progress: Progress | None = None) -> dict[int, RunResult]:
    """`--system all`: every system of the bundle from ONE pass of the encoders and heads graph, each written to
    `system_output(opts.out, n)` with its own run record and journal (so `--resume` works as for one system)."""
    return _run(opts, lambda bundle: {int(n): system_output(opts.out, int(n))
                                      for n in sorted(bundle.manifest.systems, key=int)}, progress)


# ---- the run ----------------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    """What `_prepare` checked and opened: the package, the verified bundle, one output, journal header and finished
    predictions (from `--resume`) per system."""

    package: EvalPackage
    bundle: Bundle
    bundle_dir: Path
    outs: dict[int, Path]
    headers: dict[int, dict[str, Any]]
    done: dict[int, dict[str, Prediction]]
    resumed: dict[int, int]
    metadata_sha256: str
    clock: StageClock
    started: float


def _run(opts: RunOptions, outputs: Callable[[Bundle], dict[int, Path]], progress: Progress | None,
         ) -> dict[int, RunResult]:
    prep = _prepare(opts, outputs)
    source = _source(prep.bundle, prep.bundle_dir, opts)
    source.start(list(prep.outs), prep.clock)
    try:
        first_s, hashes = _predict(prep, source, progress)
    finally:
        source.close()
    elapsed = time.perf_counter() - prep.started
    return _finish(opts, prep, source, first_s, hashes, elapsed)


def _refuse_outputs(outs: Sequence[Path], opts: RunOptions) -> None:
    """An output or journal already there (unless --force / --resume), a meta.yaml label the name does not give."""
    for out in outs:
        journal = journal_path(out)
        if out.exists() and not opts.force:
            raise BstError(f"{out}: exists; pass --force to overwrite it")
        if journal.exists() and not (opts.resume or opts.force):
            raise BstError(f"{journal}: a partial run exists; pass --resume to continue it or --force to start over")
        if opts.meta_yaml:
            from .meta_yaml import label_from_output

            label_from_output(out)


def _prepare(opts: RunOptions, outputs: Callable[[Bundle], dict[int, Path]]) -> _Prepared:
    """Every refusal, in the order a user can fix them, before any session or Ray worker starts."""
    if opts.system != "all":
        _refuse_outputs([Path(opts.out)], opts)
    if opts.batch_size < 1:
        raise BstError(f"--batch-size must be >= 1, got {opts.batch_size}")
    if opts.meta_yaml:
        from .meta_yaml import parse_authors

        parse_authors(opts.authors, opts.institution)
    package = read_eval_package(opts.eval_dir, opts.metadata, strict_metadata=opts.strict_metadata)
    if not package.clips:
        raise DataError(f"{package.metadata_path}: no clips in the evaluation package")
    started = time.perf_counter()
    bundle_dir = resolve_bundle_dir(opts.bundle)
    clock = StageClock()  # this run's stage times (the predictor keeps none)
    with clock.stage("bundle check + sessions"):
        bundle = load_bundle(bundle_dir)
    outs = outputs(bundle)
    bundle.require(outs, int8=opts.int8)
    if opts.system == "all":
        _refuse_outputs(list(outs.values()), opts)
    meta_sha = file_sha256(package.metadata_path)
    headers = {n: {"journal": JOURNAL_FORMAT, "bundle_id": bundle.manifest.bundle_id, "system": n,
                   "int8": bool(opts.int8), "metadata_sha256": meta_sha} for n in outs}
    done = {n: _read_journal(journal_path(outs[n]), headers[n])
            if opts.resume and not opts.force and journal_path(outs[n]).exists() else {} for n in outs}
    return _Prepared(package, bundle, bundle_dir, outs, headers, done, {n: len(d) for n, d in done.items()},
                     meta_sha, clock, started)


def _source(bundle: Bundle, bundle_dir: Path, opts: RunOptions) -> PredictionSource:
    if opts.ray is None:
        return LocalSource(bundle, opts)
    from .distributed import RaySource

    return RaySource(opts.ray, bundle_dir, provider=opts.provider, threads=opts.threads, int8=opts.int8,
                     batch_size=opts.batch_size)


def _read_journal(path: Path, header: dict[str, Any]) -> dict[str, Prediction]:
    """Finished items of an earlier run of the same bundle/system/metadata; a torn last line is ignored."""
    done: dict[str, Prediction] = {}
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
        try:
            if json.loads(first) != header:
                raise BstError(f"{path}: journal of another run (bundle, system, int8 or metadata differ); "
                               "rerun with --force to start over")
        except json.JSONDecodeError:
            return done
        for line in fh:
            try:
                pred = Prediction.from_record(json.loads(line))
            except (json.JSONDecodeError, KeyError, ValueError, TypeError):
                break  # torn write at the moment of the kill: everything before it is intact
            done[pred.id] = pred
    return done


def _open_journals(prep: _Prepared) -> dict[int, IO[str]]:
    files: dict[int, IO[str]] = {}
    for n, out in prep.outs.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        journal = journal_path(out)
        if prep.done[n]:  # rewrite what was read, so a line torn by the kill never sits before the lines added now
            kept = [prep.headers[n], *(p.to_record() for p in prep.done[n].values())]
            atomic_write_text(journal, "".join(json.dumps(r) + "\n" for r in kept))
        files[n] = open(journal, "a" if prep.done[n] else "w", encoding="utf-8")
        if not prep.done[n]:
            files[n].write(json.dumps(prep.headers[n]) + "\n")
    return files


def _predict(prep: _Prepared, source: PredictionSource, progress: Progress | None,
             ) -> tuple[float | None, dict[str, str | None]]:
    """The source's predictions of the clips not finished yet, each batch journalled (fsynced) as it arrives.
    Returns the seconds to the first batch and the audio hashes the source took."""
    clips, done = prep.package.clips, prep.done
    todo = [c for c in clips if any(c.id not in done[n] for n in prep.outs)]
    hashes: dict[str, str | None] = {}
    first_s = None
    files = _open_journals(prep)
    try:
        if progress:
            progress(len(clips) - len(todo), len(clips))
        if todo:
            for by_system in source.predictions(todo, list(prep.outs), hashes, prep.clock):
                if first_s is None:
                    first_s = time.perf_counter() - prep.started
                for n, batch in by_system.items():
                    new = [p for p in batch if p.id not in done[n]]
                    files[n].write("".join(json.dumps(p.to_record()) + "\n" for p in new))
                    files[n].flush()
                    os.fsync(files[n].fileno())
                    done[n].update((p.id, p) for p in new)
                if progress:
                    progress(min(len(d) for d in done.values()), len(clips))
    finally:
        for fh in files.values():
            fh.close()
    missing = [c.id for c in clips if any(c.id not in done[n] for n in prep.outs)]
    if missing:  # a source that lost items without raising: never a CSV with holes
        raise BstError(f"{len(missing)} clip(s) got no prediction (first: {missing[0]}); no CSV was written")
    return first_s, hashes


def _finish(opts: RunOptions, prep: _Prepared, source: PredictionSource, first_s: float | None,
            hashes: dict[str, str | None], elapsed: float) -> dict[int, RunResult]:
    results = {}
    package, clock = prep.package, prep.clock
    for n, out in prep.outs.items():
        policy = SystemPolicy.from_dict(prep.bundle.manifest.systems[str(n)])
        final = [prep.done[n][c.id] for c in package.clips]
        with clock.stage("write + validate CSV"):
            write_submission(out, ((p.id, p.label, p.score) for p in final))
            validate_submission(out, package.ids)
        record = _run_record(opts, prep, n, policy, _system_providers(source.providers, policy), final, first_s,
                             hashes, out, elapsed)
        record.update(source.record_extras())
        if opts.check_overlap is not None:
            record["overlap"] = {"data_dir": str(opts.check_overlap),
                                 "clips": find_overlap(package.clips, opts.check_overlap)}
        atomic_write_text(record_path(out), json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        if opts.meta_yaml:
            from .meta_yaml import parse_authors, write_submission_meta

            write_submission_meta(out, authors=parse_authors(opts.authors, opts.institution),
                                  manifest=prep.bundle.manifest, policy=policy, system=n, int8=bool(opts.int8))
        journal_path(out).unlink(missing_ok=True)
        results[n] = RunResult(out, record, final)
    return results


def _system_providers(providers: dict[str, str], policy: SystemPolicy) -> dict[str, str]:
    """The providers of the graphs this system runs (the ranker only when its policy uses one)."""
    return {g: p for g, p in providers.items() if g != "ranker" or policy.use_ranker}


def _run_record(opts: RunOptions, prep: _Prepared, system: int, policy: SystemPolicy, providers: dict[str, str],
                final: list[Prediction], first_s: float | None, hashes: dict[str, str | None], out: Path,
                elapsed: float) -> dict[str, Any]:
    m, package, resumed = prep.bundle.manifest, prep.package, prep.resumed[system]
    reasons = Counter(p.fallback.split(":")[0] for p in final if p.fallback)
    classes = Counter(p.label for p in final)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output": str(out),
        "bundle_id": m.bundle_id,
        "bundle_dir": str(Path(prep.bundle_dir).resolve()),
        "clap_weights": m.clap_weights,
        "system": system,
        "system_name": policy.name,
        "precision": "int8" if opts.int8 else "fp32",
        "provider": overall_provider(providers),
        "providers": providers,
        "threads": opts.threads,
        "batch_size": opts.batch_size,
        "package_versions": package_versions(),
        "eval_dir": str(Path(opts.eval_dir).resolve()),
        "metadata_file": str(package.metadata_path),
        "metadata_sha256": prep.metadata_sha256,
        "audio_digest": audio_digest(package.clips, hashes),
        "rows": len(final),
        "class_counts": {c: classes[c] for c in CODES if classes[c]},
        "fallbacks": dict(reasons),
        "fallback_items": [{"id": p.id, "reason": p.fallback} for p in final if p.fallback],
        "overridden": int(sum(p.overridden for p in final)),
        "repaired_metadata": {"rows": len(package.repaired_ids), "ids": package.repaired_ids},
        "unlisted_audio": _unlisted_audio(package),
        "resumed_items": resumed,
        "elapsed_s": round(elapsed, 3),
        "seconds_to_first_batch": None if first_s is None else round(first_s, 3),
        "clips_per_s": round((len(final) - resumed) / elapsed, 3) if elapsed > 0 else None,
        "stage_seconds": {k: round(v, 3) for k, v in sorted(prep.clock.seconds.items())},
    }


def _unlisted_audio(package: EvalPackage) -> list[str]:
    """Entries of audio/ that no metadata row names: not predicted (the submission has exactly the metadata's ids),
    but listed so that a package with a lost metadata row does not pass unnoticed."""
    folder = Path(package.root) / "audio"
    if not folder.is_dir():
        return []
    listed = {c.id for c in package.clips}
    return sorted(p.name for p in folder.iterdir() if (p.name[: -len(p.suffix)] if p.suffix else p.name) not in listed)
