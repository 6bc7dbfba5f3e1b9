"""`bst report RUN`: the pool table — per-family hF over the five folds, why any family was excluded, the best single
family, the ensembles, and the seed report's Table 4 beside them (real BSD10k figures, for scale only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .pool import load_run

#: seed technical report, Table 4 (hF %, BSD10k 5-fold unless stated)
SEED_TABLE4: tuple[tuple[str, str, str], ...] = (
    ("Audio-only baseline", "5-fold", "75.33"),
    ("Multimodal baseline", "5-fold", "78.95"),
    ("Best individual fresh model", "5-fold", "82.2893"),
    ("Top-12 fresh ensemble", "5-fold", "83.4690"),
    ("Best nested ranker", "nested CV", "83.5543"),
    ("System 1", "dev-as-eval", "83.5214"),
)


def _pct(x: float) -> str:
    return "  nan" if not np.isfinite(x) else f"{100 * x:5.2f}"


def family_rows(registry: dict) -> list[dict]:
    rows = []
    for name, e in registry["families"].items():
        folds = e.get("folds", {})
        nll_raw = [s["nll_test_raw"] for s in folds.values()]
        nll_cal = [s["nll_test_calibrated"] for s in folds.values()]
        rows.append({"family": name, "group": e["group"], "status": e["status"], "folds": len(folds),
                     "hF_mean": e.get("hF_mean", float("nan")), "hF_std": e.get("hF_std", float("nan")),
                     "hF_oof": e.get("hF_oof", float("nan")),
                     "nll_raw": float(np.mean(nll_raw)) if nll_raw else float("nan"),
                     "nll_cal": float(np.mean(nll_cal)) if nll_cal else float("nan"),
                     "note": e.get("excluded") or e.get("reason") or ""})
    return rows


def format_report(run_dir: Path | str) -> str:
    run = load_run(run_dir)
    reg = run.registry
    rows = family_rows(reg)
    done = [r for r in rows if r["status"] == "done"]
    lines = [f"run {run.path}: {reg['n_dev']} dev clips, {reg['n_cs']} CS clips, pool seed {reg['seed']}, "
             f"{len(done)}/{len(rows)} families done; trained on {', '.join(reg.get('devices') or ['cpu'])}",
             "",
             "| family | group | hF % (mean ± std, 5 folds) | OOF hF % | held-out NLL raw → calibrated | note |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["hF_mean"] if np.isfinite(r["hF_mean"]) else 1.0):
        if r["status"] == "done":
            hf = f"{_pct(r['hF_mean'])} ± {_pct(r['hF_std']).strip()}"
        else:
            hf = f"{r['status']} ({r['folds']}/5 folds)" if r["status"] != "skipped" else "skipped"
        note = ("EXCLUDED: " + r["note"]) if reg["families"][r["family"]].get("excluded") else r["note"]
        nll = f"{r['nll_raw']:.3f} → {r['nll_cal']:.3f}" if r["folds"] else "-"
        oof = _pct(r["hF_oof"]) if r["status"] == "done" else "-"
        lines.append(f"| {r['family']} | {r['group']} | {hf} | {oof} | {nll} | {note} |")
    selectable = [r for r in done if not reg["families"][r["family"]].get("excluded")]
    if selectable:
        best = max(selectable, key=lambda r: r["hF_mean"])
        lines += ["", f"best single family: {best['family']} hF {_pct(best['hF_mean'])} ± "
                      f"{_pct(best['hF_std']).strip()} (OOF {_pct(best['hF_oof']).strip()})"]
    if run.ensembles:
        lines += ["", "| ensemble | OOF hF % (selection objective) | hF % per fold (mean ± std) | nested hF % "
                      "(weights chosen without the test fold) | weights |", "|---|---|---|---|---|"]
        for name, pool in run.ensembles.items():
            weights = ", ".join(f"{f} {w:.2f}" for f, w in pool["weights"].items())
            relaxed = " (caps relaxed: best single)" if pool.get("caps_relaxed") else ""
            nested = (f"{_pct(pool['hF_nested_mean'])} ± {_pct(pool['hF_nested_std']).strip()}"
                      if "hF_nested_mean" in pool else "-")
            lines.append(f"| {name} | {_pct(pool['hF'])} | {_pct(pool['hF_fold_mean'])} ± "
                         f"{_pct(pool['hF_fold_std']).strip()} | {nested} | {weights}{relaxed} |")
    lines += ["", "seed report Table 4 (real BSD10k; for comparison only, not this data):",
              "| configuration | protocol | hF % |", "|---|---|---|"]
    lines += [f"| {c} | {p} | {h} |" for c, p, h in SEED_TABLE4]
    return "\n".join(lines)
