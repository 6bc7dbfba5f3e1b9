"""`bst-train report RUN`: the pool table — per-family hF over the five folds, why any family was excluded, the best single
family, the ensembles, and the seed system's published figures beside them (docs/method.md; real BSD10k figures, for
scale only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .ensemble import not_pooled
from .run import load_run

#: seed technical report, Table 4 (hF %, BSD10k 5-fold unless stated)
SEED_TABLE4: tuple[tuple[str, str, str], ...] = (
    ("Audio-only baseline", "5-fold", "75.33"),
    ("Multimodal baseline", "5-fold", "78.95"),
    ("Best individual fresh model", "5-fold", "82.2893"),
    ("Top-12 fresh ensemble", "5-fold", "83.4690"),
    ("Best nested ranker", "nested CV", "83.5543"),
    ("System 1", "dev-as-eval", "83.5214"),
)


#: the seed system's pool composition (31 families, docs/method.md), in its order; a family's section is the one its pool file
#: gave it, else the one its config group belongs to
SECTIONS: tuple[str, ...] = ("core v2mix", "prior, confidence and hierarchy", "external, FSD and text-diversity",
                             "baselines and teachers", "not pooled: BSD35k-CS labels taken as clean", "other")
GROUP_SECTION = {"core": SECTIONS[0], "prior-hier-conf": SECTIONS[1], "external": SECTIONS[2],
                 "text-diversity": SECTIONS[2], "metadata": SECTIONS[2], "audio": SECTIONS[2], "baseline": SECTIONS[3],
                 "noisy": SECTIONS[4]}
#: Table 1's training resources, as a family's config uses them
EXTERNAL_NAMES = {"esc50": "ESC-50", "us8k": "UrbanSound8K", "fsd50k": "FSD50K"}


def section_of(entry: dict) -> str:
    cfg = entry.get("config", {})
    if cfg.get("cs", {}).get("mode") == "naive":
        return SECTIONS[4]
    return entry.get("section") or GROUP_SECTION.get(entry.get("group", ""), SECTIONS[-1])


def resources_of(entry: dict) -> str:
    """Table 1's resources a family trains on: BSD10k, BSD35k-CS (teacher soft/hard, or as clean), external sets."""
    cfg = entry.get("config", {})
    used = ["BSD10k"]
    mode = cfg.get("cs", {}).get("mode", "none")
    if mode == "teacher":
        used.append("BSD35k-CS soft/hard teacher")
    elif mode == "naive":
        used.append("BSD35k-CS as clean")
    used += [EXTERNAL_NAMES.get(n, n) for n in cfg.get("external", [])]
    return " + ".join(used)


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
                     "note": e.get("excluded") or e.get("reason") or "", "section": section_of(e),
                     "resources": resources_of(e), "val_hF_mean": e.get("val_hF_mean", float("nan"))})
    return rows


def format_report(run_dir: Path | str) -> str:
    run = load_run(run_dir)
    reg = run.registry
    rows = family_rows(reg)
    done = [r for r in rows if r["status"] == "done"]
    barred = not_pooled(run)
    seeds = reg.get("seeds", [reg["seed"]])
    lines = [f"run {run.path}: {reg['n_dev']} dev clips, {reg['n_cs']} CS clips, pool seed {reg['seed']}"
             f"{' (seeds ' + ', '.join(map(str, seeds)) + ')' if len(seeds) > 1 else ''}, "
             f"{len(done)}/{len(rows)} families done ({5 * len(done)} fold checkpoints); "
             f"trained on {', '.join(reg.get('devices') or ['cpu'])}",
             "",
             "| family | Table 1 resources | hF % (mean ± std, 5 folds) | OOF hF % | validation hF % | held-out NLL raw → "
             "calibrated | note |",
             "|---|---|---|---|---|---|---|"]
    order = sorted(rows, key=lambda r: -r["hF_mean"] if np.isfinite(r["hF_mean"]) else 1.0)
    for section in SECTIONS:
        members = [r for r in order if r["section"] == section]
        if not members:
            continue
        n_done = sum(r["status"] == "done" for r in members)
        lines.append(f"| **{section}** ({n_done} families, {5 * n_done} fold checkpoints) | | | | | | |")
        for r in members:
            if r["status"] == "done":
                hf = f"{_pct(r['hF_mean'])} ± {_pct(r['hF_std']).strip()}"
            else:
                hf = f"{r['status']} ({r['folds']}/5 folds)" if r["status"] != "skipped" else "skipped"
            if reg["families"][r["family"]].get("excluded"):
                note = "EXCLUDED (validation): " + r["note"]
            elif r["family"] in barred:
                note = barred[r["family"]]
            else:
                note = r["note"]
            nll = f"{r['nll_raw']:.3f} → {r['nll_cal']:.3f}" if r["folds"] else "-"
            oof = _pct(r["hF_oof"]) if r["status"] == "done" else "-"
            val = _pct(r["val_hF_mean"]) if r["status"] == "done" else "-"
            lines.append(f"| {r['family']} | {r['resources']} | {hf} | {oof} | {val} | {nll} | {note} |")
    selectable = [r for r in done if r["family"] not in barred]
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
