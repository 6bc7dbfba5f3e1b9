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
