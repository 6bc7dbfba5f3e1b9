"""`bst`: the training and export side (synth, embed, train, report, rank, dev-as-eval, export, demo)."""
from __future__ import annotations

import typer

from bst.runtime.cliutil import guarded  # noqa: F401  (commands use @guarded)

app = typer.Typer(
    name="bst",
    help="Train, export and demo Broad Sound Taxonomy classifiers (PyTorch side of bst-rt).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Commands are added below, one function each; heavy imports stay inside the command bodies.
