"""The self-contained HTML page both reports write: inline CSS, PNGs embedded as data URIs, no script.

Every number a table shows is a cell carrying `data-key` (its path in the report's JSON document, dot-separated) and
`data-value` (the exact value), so a reader or a test can tie each figure on the page back to the JSON.
"""
from __future__ import annotations

import base64
import html
import json
from typing import Any, Iterable, Sequence

from .report_figures import SavedFigure

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.8em;margin:.6em 0}td,th{border:1px solid #ddd;padding:2px 6px}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.8em;color:#555}.note{color:#555;font-size:.9em}"""


def esc(text: Any) -> str:
    return html.escape(str(text))


def num(value: float | int | None, key: str, *, percent: bool = True, digits: int = 2) -> str:
    """A numeric cell: shown as a percentage (fractions) or as is (counts), exact value in `data-value`."""
    if value is None:
        shown = "-"
    elif isinstance(value, bool) or isinstance(value, int):
        shown = str(value)
    elif percent:
        shown = f"{100 * value:.{digits}f}"
    else:
        shown = f"{value:.{digits}f}"
    return f'<td class="n" data-key="{esc(key)}" data-value="{esc(json.dumps(value))}">{shown}</td>'


def text(value: Any) -> str:
    return f"<td>{esc(value)}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure(saved: SavedFigure, caption: str) -> str:
    data = base64.b64encode(saved.png_bytes).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{esc(caption)} (files: {esc(saved.png.name)}, {esc(saved.svg.name)})</figcaption></figure>')


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def paragraph(body: str) -> str:
    return f'<p class="note">{esc(body)}</p>'


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>{paragraph(subtitle)}"
            + "".join(sections) + "</body></html>\n")
