"""Shared CLI plumbing: library errors become one clear line and exit code 1, never a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

import typer

from .errors import BstError

F = TypeVar("F", bound=Callable)


def guarded(func: F) -> F:
    """Wrap a typer command so a BstError (or a missing file) prints `error: ...` on stderr and exits 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BstError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def print_version(prog: str) -> None:
    """`PROG X.Y.Z` and the onnxruntime in use (or that none is), then exit 0: for `--version` of both CLIs."""
    from importlib import metadata

    from .session import installed_ort_distributions

    try:
        version = metadata.version("bst-rt")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    ort = ", ".join(f"{d} {metadata.version(d)}" for d in installed_ort_distributions()) or "no onnxruntime"
    typer.echo(f"{prog} {version} ({ort})")
    raise typer.Exit(0)
