"""The `bst-rt predict` run: an evaluation package in, a validated submission CSV and its run record out.

Crash safety: each item's final prediction is appended to a journal beside the output (`OUT.partial.jsonl`, fsynced
per batch), so `--resume` continues a killed run without redoing finished items. Decisions are item-local, so a
resumed run (any batch size) writes the same rows as an uninterrupted one; the CSV is written atomically, then
validated.
Traceability: `OUT.run.json` names the bundle, system, provider in use, package versions, the sha256 of the
metadata file, a digest of the audio, and row and fallback counts.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, Sequence

from .atomic import atomic_write_text
from .bundle import load_bundle, resolve_bundle_dir, sha256_file
from .datasets import AUDIO_SUFFIXES, Clip, read_eval_package
from .defaults import DEFAULT_BATCH_SIZE
from .embedding import StageClock
from .errors import BstError, DataError
from .predict import Prediction, Predictor
from .submission import validate_submission, write_submission
from .taxonomy import CODES

RUNTIME_PACKAGES = ("bst-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "soundfile", "soxr", "tokenizers", "typer")


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def record_path(out: Path) -> Path:
    return out.with_name(out.stem + ".run.json")


def package_versions(names: Sequence[str] = RUNTIME_PACKAGES) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hash_or_none(path: Path | None) -> str | None:
    """sha256 of a regular file; None when absent or unreadable (that clip already fell back: the record must not
    fail after the CSV was written)."""
    try:
        return sha256_file(path) if path is not None and path.is_file() else None
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


@dataclass
class RunOptions:
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


@dataclass
class RunResult:
    out: Path
    record: dict
    predictions: list[Prediction] = field(default_factory=list)


def _journal_header(predictor: Predictor, metadata_sha: str) -> dict:
    return {"journal": "bst-rt-predict-v2", "bundle_id": predictor.bundle.manifest.bundle_id,
            "system": predictor.system, "int8": predictor.int8, "metadata_sha256": metadata_sha}


def _read_journal(path: Path, header: dict) -> dict[str, Prediction]:
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


def run_predict(opts: RunOptions, progress: Callable[[int, int], None] | None = None) -> RunResult:
    """The whole command for one system; `progress(done, total)` is called after every batch."""
    if opts.system == "all":
        raise BstError("run_predict writes one system; use run_predict_systems for --system all")
    return _run(opts, [int(opts.system)], {int(opts.system): Path(opts.out)}, progress)[int(opts.system)]


def run_predict_systems(opts: RunOptions, progress: Callable[[int, int], None] | None = None) -> dict[int, RunResult]:
    """`--system all`: every system of the bundle from ONE pass of the encoders and heads graph, each written to
    `system_output(opts.out, n)` with its own run record and journal (so `--resume` works as for one system)."""
    systems = sorted(int(n) for n in load_bundle(resolve_bundle_dir(opts.bundle)).manifest.systems)
    return _run(opts, systems, {n: system_output(opts.out, n) for n in systems}, progress)


def _run(opts: RunOptions, systems: list[int], outs: dict[int, Path], progress) -> dict[int, RunResult]:
    for out in outs.values():
        journal = journal_path(out)
        if out.exists() and not opts.force:
            raise BstError(f"{out}: exists; pass --force to overwrite it")
        if journal.exists() and not (opts.resume or opts.force):
            raise BstError(f"{journal}: a partial run exists; pass --resume to continue it or --force to start over")
    if opts.batch_size < 1:
        raise BstError(f"--batch-size must be >= 1, got {opts.batch_size}")
    if opts.meta_yaml:  # refuse a bad label or author list before any work, not after the whole run
        from .meta_yaml import label_from_output, parse_authors

        for out in outs.values():
            label_from_output(out)
        parse_authors(opts.authors, opts.institution)
    package = read_eval_package(opts.eval_dir, opts.metadata, strict_metadata=opts.strict_metadata)
    if not package.clips:
        raise DataError(f"{package.metadata_path}: no clips in the evaluation package")
    bundle_dir = resolve_bundle_dir(opts.bundle)
    started = time.perf_counter()
    first = Predictor.load(load_bundle(bundle_dir), system=systems[0], provider=opts.provider,
                           threads=opts.threads, int8=opts.int8)
    clock = StageClock()  # this run's stage times (the predictor keeps none)
    clock.add("bundle check + sessions", time.perf_counter() - started)
    predictors = {n: first.with_system(n) for n in systems}
    meta_sha = sha256_file(package.metadata_path)
    headers = {n: _journal_header(predictors[n], meta_sha) for n in systems}
    done: dict[int, dict[str, Prediction]] = {}
    for n in systems:
        journal = journal_path(outs[n])
        resuming = opts.resume and journal.exists() and not opts.force
        done[n] = _read_journal(journal, headers[n]) if resuming else {}
    todo = [c for c in package.clips if any(c.id not in done[n] for n in systems)]
    resumed = {n: len(done[n]) for n in systems}
    first_prediction_s = None
    hashes: dict[str, str | None] = {}  # audio sha256 taken while predicting, for the run record
    files = {}
    try:
        for n in systems:
            outs[n].parent.mkdir(parents=True, exist_ok=True)
            journal = journal_path(outs[n])
            if done[n]:  # rewrite what was read, so a line torn by the kill never sits before the lines added now
                kept = [headers[n], *(p.to_record() for p in done[n].values())]
                atomic_write_text(journal, "".join(json.dumps(r) + "\n" for r in kept))
            files[n] = open(journal, "a" if done[n] else "w", encoding="utf-8")
            if not done[n]:
                files[n].write(json.dumps(headers[n]) + "\n")
        if progress:
            progress(len(package.clips) - len(todo), len(package.clips))
        batches = (todo[start : start + opts.batch_size] for start in range(0, len(todo), opts.batch_size))
        for by_system in first.predict_systems_stream(batches, systems, hashes, clock):
            if first_prediction_s is None:
                first_prediction_s = time.perf_counter() - started
            for n, batch in by_system.items():
                new = [p for p in batch if p.id not in done[n]]
                files[n].write("".join(json.dumps(p.to_record()) + "\n" for p in new))
                files[n].flush()
                os.fsync(files[n].fileno())
                done[n].update((p.id, p) for p in new)
            if progress:
                progress(min(len(d) for d in done.values()), len(package.clips))
    finally:
        for fh in files.values():
            fh.close()
    elapsed = time.perf_counter() - started
    results = {}
    for n in systems:
        out, predictor = outs[n], predictors[n]
        final = [done[n][c.id] for c in package.clips]
        with clock.stage("write + validate CSV"):
            write_submission(out, ((p.id, p.label, p.score) for p in final))
            validate_submission(out, package.ids)
        record = _run_record(opts, predictor, package, final, meta_sha, elapsed, first_prediction_s, resumed[n],
                             bundle_dir, hashes, out, clock)
        if opts.check_overlap is not None:
            record["overlap"] = {"data_dir": str(opts.check_overlap),
                                 "clips": find_overlap(package.clips, opts.check_overlap)}
        atomic_write_text(record_path(out), json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        if opts.meta_yaml:
            _write_meta(out, predictor, opts)
        journal_path(out).unlink(missing_ok=True)
        results[n] = RunResult(out, record, final)
    return results


def _run_record(opts, predictor, package, final, meta_sha, elapsed, first_s, resumed, bundle_dir, hashes, out,
                clock) -> dict:
    m = predictor.bundle.manifest
    reasons = Counter(p.fallback.split(":")[0] for p in final if p.fallback)
    classes = Counter(p.label for p in final)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output": str(out),
        "bundle_id": m.bundle_id,
        "bundle_dir": str(Path(bundle_dir).resolve()),
        "clap_weights": m.clap_weights,
        "system": predictor.system,
        "system_name": predictor.policy.name,
        "precision": "int8" if predictor.int8 else "fp32",
        "provider": predictor.provider,
        "providers": predictor.providers,
        "threads": opts.threads,
        "batch_size": opts.batch_size,
        "package_versions": package_versions(),
        "eval_dir": str(Path(opts.eval_dir).resolve()),
        "metadata_file": str(package.metadata_path),
        "metadata_sha256": meta_sha,
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
        "stage_seconds": {k: round(v, 3) for k, v in sorted(clock.seconds.items())},
    }


def _unlisted_audio(package) -> list[str]:
    """Entries of audio/ that no metadata row names: not predicted (the submission has exactly the metadata's ids),
    but listed so that a package with a lost metadata row does not pass unnoticed."""
    folder = Path(package.root) / "audio"
    if not folder.is_dir():
        return []
    listed = {c.id for c in package.clips}
    return sorted(p.name for p in folder.iterdir() if (p.name[: -len(p.suffix)] if p.suffix else p.name) not in listed)


def _write_meta(out: Path, predictor: Predictor, opts: RunOptions) -> Path:
    """The DCASE `<label>.meta.yaml` beside the output (runtime/meta_yaml.py): label from the output's name."""
    from .meta_yaml import parse_authors, write_submission_meta

    return write_submission_meta(out, authors=parse_authors(opts.authors, opts.institution),
                                 manifest=predictor.bundle.manifest, policy=predictor.policy,
                                 system=predictor.system, int8=predictor.int8)
