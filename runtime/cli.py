"""`bst-rt`: the torch-free command line (predict, info, classify, validate, evaluate)."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer

from .cliutil import guarded  # noqa: F401  (commands use @guarded)
from .defaults import DEFAULT_BATCH_SIZE
from .session import Provider

T = TypeVar("T")

app = typer.Typer(
    name="bst-rt",
    help="Broad Sound Taxonomy runtime: predict, inspect bundles, validate and score DCASE 2026 Task 1 submissions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,  # usage errors as one plain line, never a panel that breaks a path at the console width
)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=lambda v: _show_version(v), is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Broad Sound Taxonomy runtime: predict, inspect bundles, validate and score DCASE 2026 Task 1 submissions."""
    from .session import warn_if_both_ort_wheels

    warn_if_both_ort_wheels()


def _show_version(value: bool) -> None:
    from .cliutil import print_version

    if value:
        print_version("bst-rt")

# Commands are added below, one function each; the work lives in the library modules.


# --- validate / evaluate (submission files) -----------------------------------------------------------------------
class Convention(str, Enum):
    drop = "drop"
    zero = "zero"


_MAX_LISTED_PROBLEMS = 50


@app.command()
@guarded
def validate(
    submission: Annotated[Path, typer.Argument(help="Submission CSV: id, predicted class, score.")],
    *,
    eval_dir: Annotated[Path, typer.Option(help="Evaluation package folder (audio/ + metadata CSV).")],
    metadata: Annotated[Optional[Path], typer.Option(help="The package's metadata CSV, if not found.")] = None,
) -> None:
    """Check a submission against an evaluation package: every id once, in full, legal codes, scores in [0, 1]."""
    from .datasets import read_eval_package
    from .submission import collect_submission_errors

    package = read_eval_package(eval_dir, metadata)
    problems = collect_submission_errors(submission, package.ids)
    if problems:
        for line in problems[:_MAX_LISTED_PROBLEMS]:
            typer.echo(f"error: {line}", err=True)
        if len(problems) > _MAX_LISTED_PROBLEMS:
            typer.echo(f"error: ... and {len(problems) - _MAX_LISTED_PROBLEMS} more problem(s)", err=True)
        typer.echo(f"{submission}: INVALID ({len(problems)} problem(s))", err=True)
        raise typer.Exit(1)
    typer.echo(f"{submission}: valid ({len(package.ids)} evaluation ids, each predicted once)")


@app.command()
@guarded
def evaluate(
    submission: Annotated[Path, typer.Argument(help="Submission CSV to score.")],
    *,
    labels: Annotated[Path, typer.Option(help="Labels CSV: an id column (id, anonymous_id or sound_id) and class.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    convention: Annotated[
        Convention, typer.Option(help="Never-predicted true classes: drop (official) or zero (stricter).")
    ] = Convention.drop,
) -> None:
    """Score a submission with the task metric (macro hierarchical P/R/F and accuracies)."""
    from .datasets import read_labels
    from .submission import score_submission

    metrics = score_submission(submission, read_labels(labels), convention=convention.value)
    if json_output:
        typer.echo(json.dumps(metrics))
        return
    _print_metric_tables(metrics)


def _print_metric_tables(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    summary = Table(title=f"{metrics['n']} clips, {metrics['convention']} (%)")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key in ("hF", "hP", "hR", "accuracy", "parent_accuracy", "macro_accuracy", "macro_parent_accuracy",
                "hierarchical_accuracy", "cross_parent_error"):
        summary.add_row(key, pct(metrics[key]))
    from .taxonomy import CLASSES, CODE_TO_INDEX

    per_class = Table(title="per class")
    for column in ("class", "name", "hP", "hR", "hF", "support", "predicted"):
        per_class.add_column(column, justify="left" if column in ("class", "name") else "right")
    for code, row in metrics["per_class"].items():
        cells = [pct(row[k]) for k in ("hP", "hR", "hF")] + [str(row["support"]), str(row["predicted"])]
        name = CLASSES[CODE_TO_INDEX[code]].name if code in CODE_TO_INDEX else ""
        per_class.add_row(code, name, *cells)
    console = Console(soft_wrap=True)
    console.print(summary)
    console.print(per_class)
    if metrics["dropped_classes"]:
        console.print(f"never predicted, dropped from the means: {', '.join(metrics['dropped_classes'])}")


# --- predict / info (bundles) -------------------------------------------------------------------------------------
@app.command()
@guarded
def predict(
    eval_dir: Annotated[Path, typer.Argument(help="Evaluation package folder (audio/ + metadata CSV).")],
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="Submission CSV to write.")] = Path("output.csv"),
    bundle: Annotated[
        Optional[Path], typer.Option(help="Bundle folder; default $BST_BUNDLE, else the one `bst-train demo` recorded.")
    ] = None,
    system: Annotated[str, typer.Option(
        help="System 1-4 of the bundle, or 'all': every system from one pass of the encoders, written to "
             "OUT with '_N' before '.output.csv' (or OUT's '{system}' replaced by N).")] = "1",
    provider: Annotated[Provider, typer.Option(help="auto picks CUDA only when it really works.")] = Provider.auto,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Threads per ONNX session (default: ORT's).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per batch; peak memory grows with it.")] = DEFAULT_BATCH_SIZE,
    int8: Annotated[bool, typer.Option("--int8", help="Use the bundle's int8 CLAP graphs.")] = False,
    meta_yaml: Annotated[bool, typer.Option(
        "--meta-yaml", help="Also write the DCASE <label>.meta.yaml; -o must be <label>.output.csv.")] = False,
    author: Annotated[Optional[list[str]], typer.Option(
        help="meta.yaml author \"First Last <email>\"; repeat for each, corresponding author first.")] = None,
    institution: Annotated[str, typer.Option(help="meta.yaml: the authors' institution.")] = "",
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run from OUT.partial.jsonl.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing OUT (and any partial run).")] = False,
    check_overlap: Annotated[
        Optional[Path], typer.Option(help="Report clips whose audio also appears (same bytes) under this folder.")
    ] = None,
    metadata: Annotated[Optional[Path], typer.Option(help="Metadata CSV of the package, when it cannot be found.")] = None,
    strict_metadata: Annotated[bool, typer.Option(
        "--strict-metadata", help="Refuse a metadata row that is not UTF-8 (default: read it with U+FFFD, count it).")
    ] = False,
    ray: Annotated[
        Optional[str], typer.Option(help="Spread the clips over a Ray cluster: 'auto' (running cluster, else a local "
                                         "one) or its ADDRESS. Needs the [ray] extra; the same CSV, run record and "
                                         "--resume as a local run.")
    ] = None,
    ray_concurrency: Annotated[int, typer.Option(min=1, help="--ray: predictor actors (one Predictor each).")] = 1,
    ray_gpus_per_actor: Annotated[float, typer.Option(min=0.0, help="--ray: GPUs per actor (CUDA).")] = 0.0,
) -> None:
    """Predict every clip of an evaluation package into a validated submission CSV, with a run record beside it."""
    from .errors import BstError
    from .predict_run import RunOptions, record_path, run_predict, run_predict_systems

    if system not in ("1", "2", "3", "4", "all"):
        raise BstError(f"--system must be 1, 2, 3, 4 or all, got {system!r}")
    ray_options = None
    if ray is not None:
        from .distributed import RayOptions

        ray_options = RayOptions(address=ray, concurrency=ray_concurrency, num_gpus=ray_gpus_per_actor)
    opts = RunOptions(eval_dir=eval_dir, out=out, bundle=bundle, system=system if system == "all" else int(system),
                      provider=provider.value, threads=threads, batch_size=batch_size, int8=int8, resume=resume,
                      force=force, meta_yaml=meta_yaml, check_overlap=check_overlap, metadata=metadata,
                      strict_metadata=strict_metadata, authors=tuple(author or ()), institution=institution,
                      ray=ray_options)
    if system == "all":
        for res in _with_progress(lambda progress: run_predict_systems(opts, progress)).values():
            _print_predict_summary(res.record, record_path(res.out))
        return
    record = _with_progress(lambda progress: run_predict(opts, progress)).record
    _print_predict_summary(record, record_path(out))


def _with_progress(work: Callable[[Callable[[int, int], None]], T]) -> T:
    """Run `work(progress)` with a progress bar on stderr (stdout stays for results). The bar appears only at the
    first progress call, which comes after the package is read, the bundle verified and the sessions loaded; until
    then a transient status line says what is happening, so a refused run never leaves a stale `0/?` behind."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    state: dict = {"first": None, "t0": None, "bar": None, "task": None}
    status = console.status("reading the package, verifying the bundle, loading the ONNX sessions ...")
    status.start()

    def progress(done: int, total: int) -> None:
        if state["bar"] is None:
            status.stop()
            state["bar"] = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console)
            state["bar"].start()
            state["task"] = state["bar"].add_task("predict", total=total, rate="")
        now = time.perf_counter()
        if state["first"] is None:
            state["first"], state["t0"] = done, now
        rate = (done - state["first"]) / (now - state["t0"]) if now > state["t0"] else 0.0
        state["bar"].update(state["task"], completed=done, total=total, rate=f"{rate:.2f} clips/s" if rate else "")

    try:
        return work(progress)
    finally:
        status.stop()
        if state["bar"] is not None:
            state["bar"].stop()


def _print_predict_summary(record: dict, record_file: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)  # lines holding paths are not broken at the console width
    console.print(
        f"wrote {record['rows']} rows to {record['output']} (validated) — bundle {record['bundle_id']}, "
        f"system {record['system']} ({record['system_name']}), {record['precision']}, provider {record['provider']}"
    )
    if record.get("clap_weights") == "random":
        console.print("[bold yellow]note: this bundle's CLAP encoders have RANDOM weights (demo); "
                      "its predictions carry no meaning[/]")
    table = Table(title="class counts")
    table.add_column("class")
    table.add_column("rows", justify="right")
    for code, n in record["class_counts"].items():
        table.add_row(code, str(n))
    console.print(table)
    fallbacks = record["fallbacks"]
    if fallbacks:
        console.print("fallbacks: " + ", ".join(f"{reason}: {n}" for reason, n in fallbacks.items()))
        for item in record["fallback_items"][:10]:
            console.print(f"  {item['id']}: {item['reason']}")
    else:
        console.print("fallbacks: none")
    repaired = record.get("repaired_metadata", {})
    if repaired.get("rows"):
        console.print(f"repaired metadata (not UTF-8, read with U+FFFD): {repaired['rows']} row(s): "
                      + ", ".join(repaired["ids"][:10]) + (" ..." if repaired["rows"] > 10 else ""))
    console.print(f"overridden by the ranker: {record['overridden']}; {record['clips_per_s']} clips/s")
    if "overlap" in record:
        hits = record["overlap"]["clips"]
        console.print(f"overlap with {record['overlap']['data_dir']}: {len(hits)} clip(s)"
                      + "".join(f"\n  {h['id']} = {h['matches']}" for h in hits[:20]))
    console.print(f"run record: {record_file}")


@app.command()
@guarded
def info(
    bundle: Annotated[Optional[Path], typer.Argument(help="Bundle folder (default as for predict).")] = None,
    *,
    json_output: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON after verifying it.")] = False,
) -> None:
    """Show what a bundle holds after verifying every file's sha256: graphs, parity, systems, provenance."""
    from .bundle import load_bundle, resolve_bundle_dir
    from .bundle_info import print_bundle_info

    loaded = load_bundle(resolve_bundle_dir(bundle))
    if json_output:
        typer.echo(loaded.manifest.to_json())
        return
    print_bundle_info(loaded)


# --- classify (plain audio files, no evaluation package) -----------------------------------------------------------
@app.command()
@guarded
def classify(
    paths: Annotated[list[Path], typer.Argument(help="Audio files or folders of them (.wav .flac .ogg .mp3 .aiff).")],
    *,
    title: Annotated[str, typer.Option(help="Title for every file (when the sidecar has no row for it).")] = "",
    tags: Annotated[str, typer.Option(help="Tags for every file, comma-separated.")] = "",
    description: Annotated[str, typer.Option(help="Description for every file.")] = "",
    sidecar: Annotated[
        Optional[Path], typer.Option(help="CSV with an id (or file) column and title, tags, description per file.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    bundle: Annotated[
        Optional[Path], typer.Option(help="Bundle folder; default $BST_BUNDLE, else the one `bst-train demo` recorded.")
    ] = None,
    system: Annotated[int, typer.Option(min=1, max=4, help="System 1-4 of the bundle.")] = 1,
    provider: Annotated[Provider, typer.Option(help="auto picks CUDA only when it really works.")] = Provider.auto,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Threads per ONNX session (default: ORT's).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Files per batch; peak memory grows with it.")] = DEFAULT_BATCH_SIZE,
    int8: Annotated[bool, typer.Option("--int8", help="Use the bundle's int8 CLAP graphs.")] = False,
) -> None:
    """Classify sound files: label, class name, parent, score and top-3 per file (no evaluation package needed)."""
    from . import classify as classify_module
    from .bundle import load_bundle, resolve_bundle_dir
    from .predict import Predictor

    if json_output and csv_output:
        raise typer.BadParameter("give --json or --csv, not both")
    files = classify_module.collect_audio(paths)
    side = classify_module.read_sidecar(sidecar) if sidecar is not None else None
    clips = classify_module.clips_for(files, classify_module.Metadata(title, tags, description), side)
    predictor = Predictor.load(load_bundle(resolve_bundle_dir(bundle)), system=system, provider=provider.value,
                               threads=threads, int8=int8)
    rows = classify_module.result_rows(files, classify_module.classify(predictor, clips, batch_size))
    if json_output:
        typer.echo(classify_module.to_json(rows))
    elif csv_output:
        typer.echo(classify_module.to_csv(rows), nl=False)
    else:
        classify_module.print_table(rows)
