"""`bst-train demo`: the whole chain on the built-in synthetic corpus, in minutes, on a laptop CPU.

synthetic corpus → LAION-CLAP at seeded RANDOM weights (no checkpoint download; clearly labelled: the numbers show
the plumbing works, not what the method scores) → `bst-train embed` → a small pool → `bst-train rank` → `bst-train export` →
`bst-rt predict` → `bst-rt evaluate`. It sits on the export floor because it runs every floor (it exports a bundle).
Every stage resumes: rerunning the demo skips what is already done.
The bundle is written to `artifacts/demo` (recorded as the default bundle, so `bst-rt predict EVAL_DIR` finds it,
unless `record_default` is False: bench/predict.py builds its own bundle without touching the user's default).
`int8` also ships the int8 CLAP graphs in the bundle (`bst-train demo --int8`; `bst-rt predict --int8` runs them).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Log = Callable[[str], None]

#: a small pool: the official baseline, two diversity families, plus the runtime's two fallbacks (always trained)
DEMO_FAMILIES = ("baseline", "class-word-masked", "metadata-dropout")
#: small heads, few epochs (the training defaults are the official baseline's; see bst_rt.train.members.QUICK_OVERRIDES)
DEMO_EPOCHS = 20


@dataclass(frozen=True)
class DemoOptions:
    work: Path = Path("artifacts/demo-work")
    bundle: Path = Path("artifacts/demo")
    per_class: int = 10
    n_eval: int = 40
    seed: int = 0
    families: tuple[str, ...] = DEMO_FAMILIES
    epochs: int = DEMO_EPOCHS
    threads: int | None = None
    int8: bool = False
    record_default: bool = True


def _stage(log: Log, name: str, t0: float) -> None:
    log(f"[{time.perf_counter() - t0:6.0f}s] {name}")


def run_demo(opts: DemoOptions = DemoOptions(), log: Log = print) -> dict:
    """Returns the evaluation metrics and where the outputs are."""
    import warnings

    from bst_rt.runtime.predict_run import RunOptions, run_predict_systems
    from bst_rt.runtime.bundle import record_default_bundle
    from bst_rt.runtime.datasets import read_labels
    from bst_rt.runtime.submission import score_submission
    from bst_rt.synth.corpus import write_corpus
    from bst_rt.train.clap import load_clap
    from bst_rt.train.embed import embed_dataset
    from bst_rt.train.members import QUICK_OVERRIDES
    from bst_rt.train.pool import run_pool
    from bst_rt.train.rank import rank_run
    from bst_rt.train.systems import RankOptions

    from .bundle import ExportOptions, export_bundle
    from .clap import export_clap

    t0 = time.perf_counter()
    work = Path(opts.work)
    corpus = work / "corpus"
    if not (corpus / "eval_labels.csv").is_file():
        _stage(log, f"synthetic corpus ({opts.per_class} clips per class) -> {corpus}", t0)
        write_corpus(corpus, per_class=opts.per_class, seed=opts.seed, n_eval=opts.n_eval)
    clap_dir = work / "clap"
    if not (clap_dir / "clap_parity.json").is_file() or (opts.int8 and not _has_int8(clap_dir)):
        _stage(log, "LAION-CLAP at SEEDED RANDOM WEIGHTS (demo only: embeddings carry no learned meaning); "
                    f"exporting its encoders to ONNX{' with int8 variants' if opts.int8 else ''} -> {clap_dir}", t0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-weights warning (said above) and tracer chatter
            export_clap(load_clap(None, random_weights=True, seed=opts.seed), clap_dir, int8=opts.int8)
    for part in ("BSD10k", "BSD35k-CS"):
        _stage(log, f"bst-train embed {part} (ONNX graphs of that CLAP)", t0)
        embed_dataset(corpus / part, engine="onnx", graphs=clap_dir, threads=opts.threads, progress=False, log=log)
    run = work / "run"
    _stage(log, f"bst-train train: {', '.join(opts.families)} (+ audio-only, text-only fallbacks), 5 folds each", t0)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads or 1)  # small heads: one thread beats two on a 2-core machine
    try:
        run_pool(corpus / "BSD10k", corpus / "BSD35k-CS", run, list(opts.families), seed=opts.seed,
                 overrides={**QUICK_OVERRIDES, "epochs": opts.epochs, "patience": 6}, log=lambda m: log("  " + m))
    finally:
        torch.set_num_threads(threads)
    _stage(log, "bst-train rank: candidate ranker, nested CV, the four systems", t0)
    rank_run(run, corpus / "BSD10k", RankOptions(seed=opts.seed), log=lambda m: log("  " + m))
    _stage(log, f"bst-train export -> {opts.bundle}", t0)
    export_bundle(run, opts.bundle, ExportOptions(clap_dir=clap_dir, force=True, int8=opts.int8),
                  log=lambda m: log("  " + m))
    record = record_default_bundle(opts.bundle) if opts.record_default else None
    results = {}
    csvs = {}
    pattern = work / "system{system}.output.csv"
    _stage(log, f"bst-rt predict {corpus / 'eval'} --system all -o {pattern} (one pass of the encoders)", t0)
    runs = run_predict_systems(RunOptions(eval_dir=corpus / "eval", out=pattern, bundle=opts.bundle, system="all",
                                          provider="cpu", threads=opts.threads, force=True))
    for system, res in runs.items():
        results[system] = score_submission(res.out, read_labels(corpus / "eval_labels.csv"))
        results[system]["fallbacks"] = res.record["fallbacks"]
        csvs[system] = res.out
    summary = {"bundle": str(opts.bundle), "default_bundle_record": str(record) if record else None, "csv": {k: str(v) for k, v in csvs.items()},
               "eval_dir": str(corpus / "eval"), "labels": str(corpus / "eval_labels.csv"),
               "elapsed_s": round(time.perf_counter() - t0, 1),
               "metrics": {s: {k: r[k] for k in ("hF", "accuracy", "parent_accuracy", "cross_parent_error")}
                           for s, r in results.items()}}
    (work / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _has_int8(clap_dir: Path) -> bool:
    """Both int8 graphs AND their measured cosines: a folder exported earlier without int8 (a plain demo run) is
    re-exported with them (export_clap is the one place that quantises), never silently used without."""
    from bst_rt.runtime.encoders import AUDIO_INT8, TEXT_INT8

    try:
        parity = json.loads((clap_dir / "clap_parity.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all((clap_dir / name).is_file() for name in (AUDIO_INT8, TEXT_INT8)) and \
        all(key in parity for key in ("audio_int8_min_cosine", "text_int8_min_cosine"))


def format_summary(summary: dict) -> str:
    lines = ["", "bst-train demo — synthetic corpus, CLAP at RANDOM weights (plumbing check, not a score of the method)",
             f"{'system':<8}{'hF':>8}{'flat':>8}{'top-level':>11}{'cross-parent':>14}   CSV"]
    for s, m in summary["metrics"].items():
        lines.append(f"{s:<8}{100 * m['hF']:>8.2f}{100 * m['accuracy']:>8.2f}{100 * m['parent_accuracy']:>11.2f}"
                     f"{100 * m['cross_parent_error']:>14.2f}   {summary['csv'][s]}")
    where = (f"default for `bst-rt predict`, recorded in {summary['default_bundle_record']}"
             if summary["default_bundle_record"] else "not recorded as the default bundle")
    lines += [f"bundle: {summary['bundle']} ({where})",
              f"try:    bst-rt predict {summary['eval_dir']} -o my.csv && "
              f"bst-rt evaluate my.csv --labels {summary['labels']}",
              f"took {summary['elapsed_s']:.0f} s"]
    return "\n".join(lines)
