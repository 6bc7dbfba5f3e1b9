"""`bst-train report RUN --html DIR`: the pool report as pictures (families, pools, calibration, training curves,
re-ranker, development-as-evaluation), drawn from `report_data.pool_report_document`, written with it as
DIR/report.json beside DIR/report.html and each figure as PNG + SVG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bst_rt.runtime import report_html as h
from bst_rt.runtime.atomic import atomic_write_text
from bst_rt.runtime.report_figures import OKABE_ITO, grid, pyplot, save_figure

from .dev_eval import TABLE3_COLUMNS
from .report import SECTIONS
from .report_data import pool_report_document

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
SECTION_COLOURS = dict(zip(SECTIONS, OKABE_ITO))
MAX_PANELS = 12  # calibration and curve panels: the best families by hF first


def write_pool_report(run_dir: Path, out_dir: Path) -> Path:
    plt = pyplot()
    doc = pool_report_document(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = f"run {doc['run']} ({doc['n_dev']} dev clips, seed {doc['seed']}, trained on {', '.join(doc['devices'])})"
    sections = [_families(plt, doc, out, source), _pools(plt, doc, out, source), _calibration(plt, doc, out, source),
                _curves(plt, doc, out, source), _ranker(plt, doc, out, source), _dev_eval(plt, doc, out, source)]
    atomic_write_text(out / REPORT_JSON, json.dumps(doc, indent=1) + "\n")
    atomic_write_text(out / REPORT_HTML, h.page("Pool report", source + ". Numbers are percentages unless counts; "
                                                "every table cell carries its path in report.json.", sections))
    return out / REPORT_HTML


def _done(doc: dict) -> list[str]:
    fams = [f for f, e in doc["families"].items() if e["status"] == "done"]
    return sorted(fams, key=lambda f: (SECTIONS.index(doc["families"][f]["section"]), -(doc["families"][f]["hF_mean"]
                                                                                        or 0.0)))


def _families(plt, doc: dict, out: Path, source: str) -> str:
    fams = _done(doc)
    if not fams:
        return h.section("Families", h.paragraph("no family finished training"))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(fams) + 2), 4.0), layout="constrained")
    for x, f in enumerate(fams):
        e = doc["families"][f]
        colour = "#999999" if e["excluded"] or e["not_pooled"] else SECTION_COLOURS[e["section"]]
        hfs = [s["hF"] for s in e["folds"].values() if s["hF"] is not None]
        ax.plot([x] * len(hfs), hfs, "o", ms=3, color=colour, alpha=0.6)
        ax.errorbar([x], [e["hF_mean"]], [e["hF_std"]], fmt="_", ms=14, capsize=3, color=colour)
    ax.set_xticks(range(len(fams)), fams, rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("test-fold hF")
    from matplotlib.patches import Patch

    used = [s for s in SECTIONS if any(doc["families"][f]["section"] == s for f in fams)]
    ax.legend(handles=[Patch(color=SECTION_COLOURS[s], label=s) for s in used]
              + [Patch(color="#999999", label="excluded / not pooled")], fontsize=6, frameon=False)
    ax.set_title(f"Fold hF (points) and mean ± std per family, grouped as the seed's Table 1 — {source}", fontsize=8)
    saved = save_figure(fig, out, "families")
    rows = []
    for f in fams:
        e = doc["families"][f]
        note = ("EXCLUDED (validation): " + e["excluded"]) if e["excluded"] else (e["not_pooled"] or "")
        rows.append([h.text(f), h.text(e["section"])]
                    + [h.num(e[k], f"families.{f}.{k}") for k in ("hF_mean", "hF_std", "hF_oof", "val_hF_mean")]
                    + [h.num(s["val_hF"], f"families.{f}.folds.{k}.val_hF") for k, s in e["folds"].items()]
                    + [h.text(note)])
    headers = ["family", "section", "hF mean", "hF std", "OOF hF", "val hF mean"] + [f"val hF fold {k}" for k in
                                                                                    range(5)] + ["note"]
    return h.section("Families", h.figure(saved, "per-family fold hF"), h.table(headers, rows))


def _pools(plt, doc: dict, out: Path, source: str) -> str:
    pools = doc["pools"]
    if not pools:
        return h.section("Ensemble pools", h.paragraph("no ensemble in this run"))
    fig, axes = grid(plt, len(pools) + 1, cols=len(pools) + 1, width=3.6, height=3.4)
    groups = sorted({g for p in pools.values() for g in p["groups"].values()})
    colour = {g: OKABE_ITO[i % len(OKABE_ITO)] for i, g in enumerate(groups)}
    for ax, (name, p) in zip(axes, pools.items()):
        fams = list(p["weights"])
        ax.bar(range(len(fams)), [p["weights"][f] for f in fams], color=[colour[p["groups"][f]] for f in fams])
        for g, share in p["group_shares"].items():
            ax.axhline(p["group_caps"][g], color=colour[g], ls="--", lw=0.8)
        ax.set_xticks(range(len(fams)), fams, rotation=60, ha="right", fontsize=6)
        ax.set_ylim(0, 1.0)
        ax.set_title(f"{name}: weights (dashed: group caps){' caps relaxed' if p['caps_relaxed'] else ''}")
    from matplotlib.patches import Patch

    axes[0].legend(handles=[Patch(color=colour[g], label=f"group {g}") for g in groups], fontsize=6, frameon=False)
    ax = axes[-1]
    names = list(pools)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [pools[n]["hF_oof"] or 0 for n in names], 0.4, color=OKABE_ITO[0], label="out-of-fold")
    ax.bar(x + 0.2, [pools[n]["hF_nested_mean"] or 0 for n in names], 0.4, color=OKABE_ITO[1], label="nested")
    ax.set_xticks(x, names)
    ax.set_title("pool hF: out-of-fold vs nested")
    ax.legend(fontsize=6, frameon=False)
    fig.suptitle(f"Ensemble pools — {source}", fontsize=8)
    saved = save_figure(fig, out, "pools")
    rows = []
    for name, p in pools.items():
        for f, w in p["weights"].items():
            g = p["groups"][f]
            rows.append([h.text(name), h.text(f), h.text(g), h.num(w, f"pools.{name}.weights.{f}"),
                         h.num(p["group_shares"][g], f"pools.{name}.group_shares.{g}"),
                         h.num(p["group_caps"][g], f"pools.{name}.group_caps.{g}"),
                         h.num(p["hF_oof"], f"pools.{name}.hF_oof"),
                         h.num(p["hF_nested_mean"], f"pools.{name}.hF_nested_mean")])
    return h.section("Ensemble pools", h.figure(saved, "pool weights and hF"),
                     h.table(["pool", "family", "group", "weight", "group share", "group cap", "OOF hF",
                              "nested hF"], rows))


def _ranked(doc: dict, fams: list[str]) -> list[str]:
    return sorted(fams, key=lambda f: -(doc["families"][f]["hF_mean"] or 0.0))[:MAX_PANELS]


def _calibration(plt, doc: dict, out: Path, source: str) -> str:
    fams = _ranked(doc, list(doc["calibration"]))
    if not fams:
        return h.section("Calibration", h.paragraph("no held-out probabilities to draw"))
    fig, axes = grid(plt, len(fams), cols=4, width=2.6, height=2.6)
    for ax, f in zip(axes, fams):
        c = doc["calibration"][f]
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8)
        for key, colour, label in (("before", OKABE_ITO[5], "T = 1"), ("after", OKABE_ITO[0], "fitted T")):
            pts = [(x, y) for x, y in zip(c[key]["confidence"], c[key]["accuracy"]) if x is not None]
            ax.plot(*zip(*pts), "o-", ms=3, color=colour, label=f"{label} (ECE {100 * c[key]['ece']:.1f})")
        ax.set_title(f, fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=5, frameon=False, loc="upper left")
    fig.supxlabel("top-class confidence")
    fig.supylabel("accuracy")
    fig.suptitle(f"Reliability before / after temperature scaling (5 folds' held-out rows) — {source}", fontsize=8)
    saved = save_figure(fig, out, "calibration")
    rows = [[h.text(f), h.num(doc["calibration"][f]["n"], f"calibration.{f}.n")]
            + [h.num(doc["calibration"][f][k]["ece"], f"calibration.{f}.{k}.ece") for k in ("before", "after")]
            for f in doc["calibration"]]
    return h.section("Calibration", h.figure(saved, "reliability diagrams"),
                     h.table(["family", "held-out rows", "ECE before", "ECE after"], rows))


def _curves(plt, doc: dict, out: Path, source: str) -> str:
    fams = [f for f in _ranked(doc, _done(doc))
            if any(s.get("val_accuracy_curve") for s in doc["families"][f]["folds"].values())]
    if not fams:
        return h.section("Training curves", h.paragraph("this run's folds did not record validation curves "
                                                        "(trained before they were kept)"))
    fig, axes = grid(plt, len(fams), cols=4, width=2.6, height=2.2)
    for ax, f in zip(axes, fams):
        for k, s in doc["families"][f]["folds"].items():
            curve = s.get("val_accuracy_curve") or []
            colour = OKABE_ITO[int(k) % len(OKABE_ITO)]
            ax.plot(range(1, len(curve) + 1), curve, color=colour, lw=0.9, label=f"fold {k}")
            if s.get("best_epoch") and s["best_epoch"] <= len(curve):
                ax.plot([s["best_epoch"]], [curve[s["best_epoch"] - 1]], "*", ms=7, color=colour)
        ax.set_title(f, fontsize=7)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=5, frameon=False)
    fig.supxlabel("epoch (star: early-stopping epoch kept)")
    fig.supylabel("validation accuracy")
    fig.suptitle(f"Validation figure per epoch — {source}", fontsize=8)
    saved = save_figure(fig, out, "curves")
    rows = [[h.text(f), h.text(f"fold {k}"), h.num(s.get("best_epoch"), f"families.{f}.folds.{k}.best_epoch"),
             h.num(s.get("epochs_run"), f"families.{f}.folds.{k}.epochs_run")]
            for f in fams for k, s in doc["families"][f]["folds"].items()]
    return h.section("Training curves", h.figure(saved, "validation accuracy per epoch"),
                     h.table(["family", "fold", "best epoch", "epochs run"], rows))


def _ranker(plt, doc: dict, out: Path, source: str) -> str:
    r = doc["ranker"]
    if not r or not r["systems"]:
        return h.section("Re-ranker", h.paragraph("no ranker: run `bst-train rank RUN DATA`"))
    systems = r["systems"]
    fig, axes = grid(plt, 3, cols=3, width=3.8, height=3.2)
    ax = axes[0]
    x = np.arange(len(systems))
    for j, (key, label) in enumerate((("heldout_override_rate", "held-out (CV, frozen τ)"),
                                      ("nested_override_rate", "nested outer folds"),
                                      ("max_override_share", "policy's share"))):
        ax.bar(x + (j - 1) * 0.27, [systems[s][key] or 0 for s in systems], 0.27, color=OKABE_ITO[j], label=label)
    ax.set_xticks(x, [f"system {s}" for s in systems])
    ax.set_title("override rate vs the policy's share")
    ax.legend(fontsize=6, frameon=False)
    ax = axes[1]
    for j, s in enumerate(systems):
        taus = systems[s]["tau_per_fold"]
        ax.plot(range(len(taus)), taus, "o-", color=OKABE_ITO[j], label=f"system {s}")
    ax.set_xticks(range(max(len(v["tau_per_fold"]) for v in systems.values())))
    ax.set_xlabel("nested outer fold")
    ax.set_title("τ chosen per nested fold")
    ax.legend(fontsize=6, frameon=False)
    ax = axes[2]
    pairs = (systems.get("1", {}).get("changed_pairs") or [])[:12][::-1]
    if pairs:
        y = np.arange(len(pairs))
        fixed = np.array([p["fixed"] for p in pairs])
        broken = np.array([p["broken"] for p in pairs])
        ax.barh(y, fixed, color=OKABE_ITO[2], label="fixed")
        ax.barh(y, broken, left=fixed, color=OKABE_ITO[5], label="broken")
        ax.barh(y, np.array([p["n"] for p in pairs]) - fixed - broken, left=fixed + broken, color="#bbbbbb",
                label="both wrong")
        ax.set_yticks(y, [f"{p['from']} → {p['to']}" for p in pairs], fontsize=6)
        ax.legend(fontsize=6, frameon=False)
    ax.set_title("system 1: items changed by class pair (nested)")
    fig.suptitle(f"Re-ranker — {source}", fontsize=8)
    saved = save_figure(fig, out, "ranker")
    rows = [[h.text(f"system {s}")] + [h.num(v[k], f"ranker.systems.{s}.{k}") for k in
                           ("hF", "heldout_override_rate", "nested_override_rate", "max_override_share", "fixed",
                            "broken")]
            + [h.num(t, f"ranker.systems.{s}.tau_per_fold.{i}", percent=False) for i, t in enumerate(v["tau_per_fold"])]
            for s, v in systems.items()]
    pair_rows = [[h.text(f"system {s}"), h.text(p["from"]), h.text(p["to"])]
                 + [h.num(p[k], f"ranker.systems.{s}.changed_pairs.{j}.{k}") for k in ("n", "fixed", "broken")]
                 for s, v in systems.items() for j, p in enumerate(v["changed_pairs"] or [])]
    return h.section("Re-ranker", h.figure(saved, "override rates, τ per fold, fixed / broken pairs"),
                     h.table(["system", "nested hF", "held-out override", "nested override", "share", "fixed",
                              "broken"] + [f"τ fold {i}" for i in range(5)], rows),
                     h.table(["system", "ensemble label", "ranker label", "items", "fixed", "broken"], pair_rows)
                     if pair_rows else h.paragraph("class pairs not recorded (ranked before they were kept)"))


def _dev_eval(plt, doc: dict, out: Path, source: str) -> str:
    d = doc["dev_eval"]
    if not d:
        return h.section("Development-as-evaluation", h.paragraph("not run: `bst-train dev-as-eval RUN DATA`"))
    systems = d["systems"]
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    x = np.arange(len(systems))
    ax.bar(x - 0.2, [systems[s]["hF"] for s in systems], 0.4, color=OKABE_ITO[0], label=d["protocol"])
    ax.bar(x + 0.2, [systems[s]["nested_hF"] or 0 for s in systems], 0.4, color=OKABE_ITO[1],
           label="held-out estimate (nested / OOF)")
    ax.set_xticks(x, [f"system {s}" for s in systems])
    ax.set_ylabel("hF")
    ax.legend(fontsize=6, frameon=False)
    ax.set_title(f"Development-as-evaluation ({d['items']} clips) — {source}", fontsize=7)
    saved = save_figure(fig, out, "dev_eval")
    rows = [[h.text(f"system {s}")] + [h.num(v[c], f"dev_eval.systems.{s}.{c}") for c in (*TABLE3_COLUMNS, "override_share",
                                                                              "nested_hF")]
            for s, v in systems.items()]
    return h.section("Development-as-evaluation", h.figure(saved, "fold-respecting vs nested"),
                     h.table(["system", "hF", "flat accuracy", "top-level accuracy", "cross-parent error",
                              "overrides", "held-out hF"], rows))
