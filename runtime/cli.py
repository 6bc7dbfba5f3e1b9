"""`bst-rt`: the torch-free command line (predict, info, validate, evaluate)."""
from __future__ import annotations

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
