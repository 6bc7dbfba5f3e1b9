"""`bst-rt evaluate ... --report DIR`: the evaluation report of one or several prediction CSVs.

It draws from the document `bst-rt evaluate --json` prints (`report_data.evaluation_documents`), never from a second
computation; `DIR/report.json` is that document, `DIR/report.html` the page, each figure also as PNG and SVG.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import report_html as h
from .atomic import atomic_write_text
from .report_data import TABLE3_COLUMNS
from .report_figures import (OKABE_ITO, PARENT_COLOURS, class_label, grid, heatmap, parent_bands_x, parent_legend,
                             pyplot, row_normalised, save_figure)
from .taxonomy import CODES, PARENT_INDEX, PARENT_NAMES, PARENTS

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
_COLUMN_NAMES = {"hF": "hF", "accuracy": "flat accuracy", "parent_accuracy": "top-level accuracy",
                 "cross_parent_error": "cross-parent error"}


def write_evaluation_report(doc: dict, out_dir: Path) -> Path:
    """Write the report of an `evaluation_documents` result into `out_dir`; returns the HTML path."""
    plt = pyplot()  # fails first, in one line, when the extra is missing
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    systems = doc["systems"]
    source = f"{doc['n']} labelled clips ({doc['labels']}), {', '.join(s['name'] for s in systems)}"
    sections = [
        _table3_section(doc),
        _confusion_section(plt, systems, out, source),
        _parent_section(plt, systems, out, source),
        _per_class_section(plt, systems, doc["convention"], out, source),
        _cross_parent_section(plt, systems, out, source),
    ]
    if doc["changed"]:
        sections.append(_changed_section(plt, doc["changed"], out, source))
    atomic_write_text(out / REPORT_JSON, json.dumps(doc, indent=1) + "\n")
    page = h.page(f"Evaluation report: {', '.join(s['name'] for s in systems)}",
                  f"{source}; task metric, {doc['convention']} convention (per-class figures also under the other). "
                  "Numbers are percentages unless they are counts; every table cell carries its JSON path.", sections)
    atomic_write_text(out / REPORT_HTML, page)
    return out / REPORT_HTML


def _table3_section(doc: dict) -> str:
    rows = []
    for i, s in enumerate(doc["systems"]):
        cells = [h.text(s["name"])] + [h.num(s[c], f"systems.{i}.{c}") for c in TABLE3_COLUMNS]
        cells += [h.num(s["by_convention"][c]["hF"], f"systems.{i}.by_convention.{c}.hF") for c in ("drop", "zero")]
        cells += [h.num(s["n"], f"systems.{i}.n"), h.text(s["file"])]
        rows.append(cells)
    headers = ["system"] + [_COLUMN_NAMES[c] for c in TABLE3_COLUMNS] + ["hF (drop)", "hF (zero)", "clips", "file"]
    return h.section("Table 3 columns per system", h.table(headers, rows))


def _confusion_section(plt, systems: list[dict], out: Path, source: str) -> str:
    fig, axes = grid(plt, len(systems), cols=2, width=6.0, height=5.6)
    labels = [class_label(c) for c in CODES]
    for ax, s in zip(axes, systems):
        image = heatmap(ax, row_normalised(np.array(s["confusion"])), labels, title=s["name"], xlabels=CODES)
    fig.colorbar(image, ax=axes, shrink=0.6, label="share of the true class's clips")
    fig.suptitle(f"Confusion (row-normalised), boxed by parent — {source}", fontsize=9)
    saved = save_figure(fig, out, "confusion")
    tables = []
    for i, s in enumerate(systems):
        rows = [[h.text(class_label(CODES[t]))] + [h.num(v, f"systems.{i}.confusion.{t}.{p}") for p, v in
                                                   enumerate(row)] for t, row in enumerate(s["confusion"])]
        tables.append(f"<details><summary>{h.esc(s['name'])}: counts (rows true, columns predicted)</summary>"
                      + h.table(["true \\ predicted"] + list(CODES), rows) + "</details>")
    return h.section("Confusion matrix, 23 classes by parent", h.figure(saved, "23x23 confusion, row-normalised"),
                     *tables)


def _parent_section(plt, systems: list[dict], out: Path, source: str) -> str:
    fig, axes = grid(plt, len(systems), cols=4, width=3.2, height=3.0)
    labels = [f"{p} {PARENT_NAMES[p]}" for p in PARENTS]
    for ax, s in zip(axes, systems):
        m = row_normalised(np.array(s["parent_confusion"]))
        heatmap(ax, m, labels, boxes=False, title=s["name"])
        for (t, p), v in np.ndenumerate(m):
            ax.text(p, t, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.6 else "black")
    fig.suptitle(f"Parent confusion (% of the true parent's clips) — {source}", fontsize=9)
    saved = save_figure(fig, out, "parent_confusion")
    rows = []
    for i, s in enumerate(systems):
        for t, row in enumerate(s["parent_confusion"]):
            rows.append([h.text(s["name"]), h.text(labels[t])]
                        + [h.num(v, f"systems.{i}.parent_confusion.{t}.{p}") for p, v in enumerate(row)])
    return h.section("Parent confusion (5 parents)", h.figure(saved, "5x5 parent confusion"),
                     h.table(["system", "true \\ predicted"] + list(PARENTS), rows))


def _per_class_section(plt, systems: list[dict], convention: str, out: Path, source: str) -> str:
    fig, axes = grid(plt, len(systems), cols=1, width=11.0, height=2.2)
    x = np.arange(len(CODES))
    for n, (ax, s) in enumerate(zip(axes, systems)):
        parent_bands_x(ax)
        for j, key in enumerate(("hP", "hR", "hF")):
            values = [s["per_class"].get(c, {}).get(key) for c in CODES]
            ax.bar(x + (j - 1) * 0.27, [0 if v is None else v for v in values], 0.27, color=OKABE_ITO[j],
                   label=key if n == 0 else None)
        never = [i for i, c in enumerate(CODES) if c in s["per_class"] and s["per_class"][c]["predicted"] == 0]
        ax.plot(never, [0.02] * len(never), "x", color="black",
                label="never predicted (drop: left out; zero: 0)" if n == 0 else None)
        bc = s["by_convention"]
        ax.set_title(f"{s['name']}: macro hF {100 * bc['drop']['hF']:.2f} (drop), {100 * bc['zero']['hF']:.2f} (zero)")
        last = n == len(systems) - 1
        ax.set_xticks(x, [class_label(c) for c in CODES] if last else CODES, rotation=60 if last else 0,
                      ha="right" if last else "center", fontsize=6)
        ax.set_ylim(0, 1.05)
    fig.legend(fontsize=7, ncol=4, loc="outside upper right", frameon=False)
    fig.suptitle(f"Per-class hierarchical P / R / F — {source}", fontsize=9)
    saved = save_figure(fig, out, "per_class")
    rows = []
    for i, s in enumerate(systems):
        for code in CODES:
            if code not in s["per_class"]:
                continue
            cells = [h.text(s["name"]), h.text(class_label(code))]
            for conv in ("drop", "zero"):
                pc = s["by_convention"][conv]["per_class"][code]
                cells += [h.num(pc[k], f"systems.{i}.by_convention.{conv}.per_class.{code}.{k}") for k in ("hP", "hR", "hF")]
            cells += [h.num(s["per_class"][code][k], f"systems.{i}.per_class.{code}.{k}") for k in ("support", "predicted")]
            rows.append(cells)
    headers = ["system", "class", "hP drop", "hR drop", "hF drop", "hP zero", "hR zero", "hF zero", "support",
               "predicted"]
    return h.section("Per-class scores", h.figure(saved, f"per-class hP, hR, hF ({convention} convention bars)"),
                     f"<details><summary>table, both conventions</summary>{h.table(headers, rows)}</details>")


def _cross_parent_section(plt, systems: list[dict], out: Path, source: str) -> str:
    fig, ax = plt.subplots(figsize=(11, 3.2), layout="constrained")
    parent_bands_x(ax)
    x = np.arange(len(CODES))
    width = 0.8 / len(systems)
    for j, s in enumerate(systems):
        values = [s["cross_parent_error_by_class"].get(c, 0.0) for c in CODES]
        ax.bar(x - 0.4 + (j + 0.5) * width, values, width, color=OKABE_ITO[j % len(OKABE_ITO)], label=s["name"])
    ax.set_xticks(x, [class_label(c) for c in CODES], rotation=60, ha="right", fontsize=6)
    for tick, k in zip(ax.get_xticklabels(), PARENT_INDEX):
        tick.set_color(PARENT_COLOURS[PARENTS[k]])
    ax.set_ylabel("share predicted in another parent")
    ax.legend(fontsize=6, frameon=False)
    ax.set_title(f"Cross-parent error by true class — {source}")
    saved = save_figure(fig, out, "cross_parent")
    rows = [[h.text(class_label(c))] + [h.num(s["cross_parent_error_by_class"].get(c), f"systems.{i}."
                                              f"cross_parent_error_by_class.{c}") for i, s in enumerate(systems)]
            for c in CODES if any(c in s["cross_parent_error_by_class"] for s in systems)]
    return h.section("Cross-parent error by class", h.figure(saved, "cross-parent error by class"),
                     h.table(["class"] + [s["name"] for s in systems], rows))


def _changed_section(plt, changed: list[dict], out: Path, source: str) -> str:
    shown = [c for c in changed if c["pairs"]][:6]
    parts = [h.table(["a", "b", "items changed", "fixed by b", "broken by b"],
                     [[h.text(c["a"]), h.text(c["b"])] + [h.num(c[k], f"changed.{i}.{k}") for k in
                                                          ("n_changed", "fixed", "broken")]
                      for i, c in enumerate(changed)])]
    if shown:
        fig, axes = grid(plt, len(shown), cols=2, width=5.5, height=3.2)
        for ax, c in zip(axes, shown):
            pairs = c["pairs"][:12][::-1]
            y = np.arange(len(pairs))
            fixed = np.array([p["fixed"] for p in pairs])
            broken = np.array([p["broken"] for p in pairs])
            other = np.array([p["n"] for p in pairs]) - fixed - broken
            ax.barh(y, fixed, color=OKABE_ITO[2], label="fixed")
            ax.barh(y, broken, left=fixed, color=OKABE_ITO[5], label="broken")
            ax.barh(y, other, left=fixed + broken, color="#bbbbbb", label="both wrong")
            ax.set_yticks(y, [f"{p['from']} → {p['to']}" for p in pairs], fontsize=6)
            ax.set_title(f"{c['a']} → {c['b']}: {c['n_changed']} items changed")
            ax.legend(fontsize=6, frameon=False)
        fig.suptitle(f"What changed between systems, by class pair — {source}", fontsize=9)
        parts.insert(0, h.figure(save_figure(fig, out, "changed"), "items whose label differs, by class pair"))
    for i, c in enumerate(changed):
        rows = [[h.text(class_label(p["from"])), h.text(class_label(p["to"]))]
                + [h.num(p[k], f"changed.{i}.pairs.{j}.{k}") for k in ("n", "fixed", "broken")]
                for j, p in enumerate(c["pairs"])]
        if rows:
            more = f" (the {len(rows)} largest of {c['pairs_total']} pairs)" if c["pairs_total"] > len(rows) else ""
            parts.append(f"<details><summary>{h.esc(c['a'])} → {h.esc(c['b'])}{h.esc(more)}</summary>"
                         + h.table(["label in a", "label in b", "items", "fixed", "broken"], rows) + "</details>")
    return h.section("What changed", *parts)
