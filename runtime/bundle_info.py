"""`bst-rt info`: a verified bundle shown as tables (files and hashes, graphs and parity, systems with their measured
held-out override rates, provenance). Weights shown are provenance: the ensemble itself lives in heads.onnx."""
from __future__ import annotations

import json

from .bundle import Bundle


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _parity_text(parity: dict) -> str:
    if not parity:
        return "-"
    parts = []
    diffs = parity.get("max_abs_diff")
    if isinstance(diffs, dict) and diffs:
        parts.append("max|Δ| " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    for key in ("cosine_min", "label_agreement"):
        if key in parity:
            parts.append(f"{key} {parity[key]:.5f}")
    if "tolerance" in parity:
        parts.append(f"tol {parity['tolerance']:.0e}")
    return "; ".join(parts)


def _override_text(system: dict) -> str:
    """The held-out override rates `bst-train rank` measured: at the frozen thresholds (CV) and on the nested outer folds."""
    tuning = system.get("tuning", {})
    parts = [f"{label} {100 * tuning[key]:.1f}%" for key, label in
             (("heldout_override_rate", "cv"), ("nested_override_rate", "nested")) if tuning.get(key) is not None]
    return ", ".join(parts) or "not recorded"


def print_bundle_info(bundle: Bundle) -> None:
    from rich.console import Console
    from rich.table import Table

    m = bundle.manifest
    console = Console()
    console.print(f"bundle {m.bundle_id} at {bundle.root} (schema {m.schema_version}, created {m.created})")
    if m.clap_weights == "random":
        console.print("[bold yellow]CLAP encoders have RANDOM weights (demo bundle): predictions carry no meaning[/]")
    console.print(f"all {len(m.all_files())} files verified (size + sha256)")
    graphs = Table(title="graphs")
    for col in ("name", "file", "precision", "opset", "size", "sha256", "parity vs source"):
        graphs.add_column(col)
    for g in m.graphs.values():
        precision = f"int8 ({bundle.int8_format(g)})" if g.precision == "int8" else g.precision
        graphs.add_row(g.name, g.file, precision, str(g.opset), _mb(g.size), g.sha256[:12], _parity_text(g.parity))
    console.print(graphs)
    files = Table(title="other files")
    for col in ("key", "file", "size", "sha256"):
        files.add_column(col)
    for key, f in m.files.items():
        files.add_row(key, f.file, _mb(f.size), f.sha256[:12])
    console.print(files)
    systems = Table(title="systems")
    for col in ("id", "name", "pool", "families", "ranker", "k", "tau", "share (tuning)", "held-out overrides"):
        systems.add_column(col)
    for sid, s in sorted(m.systems.items()):
        fams = ", ".join(f"{f} {w:.2f}" for f, w in s["weights"].items() if w > 0)
        systems.add_row(sid, s["name"], s["pool"], fams, "yes" if s["use_ranker"] else "no", str(s["k"]),
                        f"{s['tau']:.3f}", f"{s['max_override_share']:.2f}" if s["use_ranker"] else "-",
                        _override_text(s) if s["use_ranker"] else "-")
    console.print(systems)
    console.print(f"text: template {m.text.template_version}, tokenizer {m.text.tokenizer_file} "
                  f"({m.text.tokenizer_source or 'unknown source'}), max {m.text.max_tokens} tokens")
    console.print(f"audio: {m.audio.sample_rate_hz} Hz, {m.audio.clip_samples} samples per clip, chunks {m.audio.chunk_rule}")
    console.print(f"heads: {len(m.heads.families)} families, pools {', '.join(m.heads.pools)}; fallbacks "
                  f"text-only={m.heads.text_only_family}, audio-only={m.heads.audio_only_family}")
    console.print("provenance: " + json.dumps(m.provenance, ensure_ascii=False)[:2000])
