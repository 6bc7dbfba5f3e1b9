"""`bst-rt`: the torch-free command line (predict, info, validate, evaluate)."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cliutil import guarded  # noqa: F401  (commands use @guarded)

app = typer.Typer(
    name="bst-rt",
    help="Broad Sound Taxonomy runtime: predict, inspect bundles, validate and score DCASE 2026 Task 1 submissions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Commands are added below, one function each; the work lives in the library modules.


# --- validate / evaluate (submission files) -----------------------------------------------------------------------
class Convention(str, Enum):
    drop = "drop"
    zero = "zero"


_MAX_LISTED_PROBLEMS = 50


@app.command()
@guarded
def validate(
    submission: Annotated[Path, typer.Argument(help="Submission CSV (id,predicted_bst_second_level_class,prediction_score).")],
    *,
    eval_dir: Annotated[Path, typer.Option(help="Evaluation package folder (audio/ + metadata CSV).")],
    metadata: Annotated[Optional[Path], typer.Option(help="Metadata CSV of the package, when it cannot be found.")] = None,
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
    per_class = Table(title="per class")
    for column in ("class", "hP", "hR", "hF", "support", "predicted"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for code, row in metrics["per_class"].items():
        per_class.add_row(code, pct(row["hP"]), pct(row["hR"]), pct(row["hF"]), str(row["support"]), str(row["predicted"]))
    console = Console()
    console.print(summary)
    console.print(per_class)
    if metrics["dropped_classes"]:
        console.print(f"never predicted, dropped from the means: {', '.join(metrics['dropped_classes'])}")
