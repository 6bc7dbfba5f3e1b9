"""The `baseline` and `audio-only` families beside the official DCASE 2026 Task 1 baseline's own code, on one
synthetic BSD10k folder and the same five folds (docs/baseline.md).

    .venv/bin/python bench/official_baseline.py --official PATH_TO_CHECKOUT [--work DIR] [--seeds 3]
        [--side both|official|ours] [--threads 1] [--doc docs/baseline.md]

PATH_TO_CHECKOUT is a checkout of MTG/dcase2026_task1_baseline (this bench never downloads anything and never runs
in CI). Steps, each resumable in --work (a finished seed is read back, not retrained):
1. the corpus: `bst-train synth DIR/corpus --per-class 40 --with-features --seed 2`;
2. the official side, per training seed: a copy of the checkout with only its data paths adapted (and, for a seed
   other than the shipped 1821, one line re-seeding torch/numpy/random after the fold seed is taken), printed as a
   diff; then its own `build_dataset.py` and `train_test.py` (multimodal and audio-only, five folds);
3. our side, per seed: `baseline` and `audio-only` through `train_and_write_fold`, the pool's own path;
4. the folds: every fold's train / validation / test sound_ids of the official `splits.csv` against ours;
5. scores: every test prediction of both sides with the official metric (the checkout's
   `hierarchical_prf_weighted`, macro over the true classes as its `evaluate.py` does) and ours
   (`bst_rt.runtime.metrics.hierarchical_f1`); per-fold hF side by side, mean ± std over seeds.

`--side official` / `--side ours` train one side only (two processes can run the sides at once); the table is
printed when both sides have every seed. `--doc` rewrites the marked block of that markdown file.
"""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_SEED = 1821  # utils.set_seed's default: the folds' random_state and the shipped training seed
MODES = {"both": "baseline", "audio": "audio-only"}  # official train_test.py mode -> our family
SEED_LINE = "    seed = set_seed()  # For reproducibility\n"
DOC_START = "<!-- bench/official_baseline.py: start -->"
DOC_END = "<!-- bench/official_baseline.py: end -->"
TARGET_GAP = 0.5  # hF points: the largest allowed difference of the means
N_FOLDS = 5


def log(msg: str) -> None:
    print(msg, flush=True)


def machine_line() -> str:
    model = "unknown CPU"
    flags = set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = ",".join(f for f in ("avx2", "avx512f", "fma") if f in flags) or "none"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores (SIMD {simd}), 1/5/15-min load {load}, Python {platform.python_version()}"


# ---------------------------------------------------------------- corpus


def build_corpus(work: Path) -> Path:
    root = work / "corpus"
    if not (root / "BSD10k" / "metadata" / "BSD10k_metadata.csv").is_file():
        log(f"corpus: bst-train synth {root} --per-class 40 --with-features --seed 2")
        subprocess.run([sys.executable, "-m", "bst_rt.export", "synth", str(root), "--per-class", "40",
                        "--with-features", "--seed", "2"], check=True)
    return root / "BSD10k"


# ---------------------------------------------------------------- official side


def adapted_files(checkout: Path, dev: Path, seed: int) -> dict[str, str]:
    """The only changes to the official code: its data paths (config.yaml), and the training seed line."""
    config = (checkout / "config.yaml").read_text(encoding="utf-8")
    new = config.replace("./data/BSD10k-v1.2/", f"{dev}/")
    if new == config:
        raise SystemExit(f"{checkout}/config.yaml: no ./data/BSD10k-v1.2/ paths to adapt (not the expected checkout)")
    files = {"config.yaml": new}
    if seed != OFFICIAL_SEED:
        script = (checkout / "train_test.py").read_text(encoding="utf-8")
        if SEED_LINE not in script:
            raise SystemExit(f"{checkout}/train_test.py: seed line not found (not the expected checkout)")
        files["train_test.py"] = script.replace(
            SEED_LINE, SEED_LINE + f"    set_seed({seed})  # bench: training seed; the folds keep random_state=seed\n")
    return files


def print_diff(checkout: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        old = (checkout / name).read_text(encoding="utf-8").splitlines(keepends=True)
        sys.stdout.writelines(difflib.unified_diff(old, text.splitlines(keepends=True), f"a/{name}", f"b/{name}"))


def official_done(d: Path) -> bool:
    return all((d / "model_output" / mode / f"fold_{k}" / "evaluation" / "predictions.csv").is_file()
               for mode in MODES for k in range(N_FOLDS))


def run_official(checkout: Path, dev: Path, work: Path, seed: int, threads: int) -> Path:
    d = work / "official" / f"seed{seed}"
    files = adapted_files(checkout, dev, seed)
    log(f"official seed {seed}: the checkout as it ships except:")
    print_diff(checkout, files)
    if official_done(d):
        log(f"official seed {seed}: done earlier ({d})")
        return d
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(checkout, d, ignore=shutil.ignore_patterns(".git", "model_output"))
    for name, text in files.items():
        (d / name).write_text(text, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    for script in ("build_dataset.py", "train_test.py"):
        with open(d / f"{script}.log", "w", encoding="utf-8") as fh:
            rc = subprocess.run([sys.executable, script], cwd=d, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        if rc:
            raise SystemExit(f"official {script} (seed {seed}) failed with exit {rc}: see {d / (script + '.log')}")
    log(f"official seed {seed}: trained in {time.perf_counter() - t0:.0f} s")
    return d


def read_official(d: Path, mode: str, k: int) -> tuple[dict[str, set[str]], list[str], list[str], list[str], float]:
    """One official fold: its split ids, test (ids, truth, prediction) and its own printed hF (results.txt)."""
    import pandas as pd

    fold = d / "model_output" / mode / f"fold_{k}"
    splits = pd.read_csv(fold / "splits.csv", dtype=str)
    parts = {s: set(splits.loc[splits["split"] == s, "index"]) for s in ("train", "val", "test")}
    pred = pd.read_csv(fold / "evaluation" / "predictions.csv", dtype=str)
    text = (fold / "evaluation" / "results.txt").read_text(encoding="utf-8")
    own = float(re.search(r"hierarchical_f1:\s*([\d.]+)%", text).group(1))
    return parts, list(pred["sound_id"]), list(pred["ground_truth"]), list(pred["prediction"]), own


# ---------------------------------------------------------------- our side


def run_ours(dev: Path, work: Path, seed: int, threads: int) -> Path:
    import torch

    from bst_rt.train.data import PoolData, load_arrays
    from bst_rt.train.families import load_family
    from bst_rt.train.folds import official_folds
    from bst_rt.train.fold_job import train_and_write_fold
    from bst_rt.train.run import fold_complete

    torch.set_num_threads(threads)
    out = work / "ours" / f"seed{seed}"
    data = PoolData.build(load_arrays(dev, need_masked=False))
    folds = official_folds(data.dev.labels)
    t0 = time.perf_counter()
    for family in MODES.values():
        cfg = load_family(family)
        for fold in folds:
            if not fold_complete(out, family, fold.k):
                s = train_and_write_fold(out, cfg, fold, data, seed).scores
                log(f"ours seed {seed}: {family} fold {fold.k}: hF {100 * s['hF']:.2f} "
                    f"(epochs {s['epochs_run']}, best {s['best_epoch']})")
    log(f"ours seed {seed}: done in {time.perf_counter() - t0:.0f} s")
    return out


def our_splits(dev: Path) -> list[dict[str, set[str]]]:
    from bst_rt.train.data import load_arrays
    from bst_rt.train.folds import official_folds

    arrays = load_arrays(dev, need_masked=False)
    ids = np.array([str(i) for i in arrays.ids])
    return [{"train": set(ids[f.train]), "val": set(ids[f.val]), "test": set(ids[f.test])}
            for f in official_folds(arrays.labels)]


def read_ours(out: Path, family: str, k: int) -> tuple[list[str], list[str], list[str]]:
    from bst_rt.runtime.taxonomy import CODES
    from bst_rt.train.run import HELDOUT_NPZ, fold_dir

    with np.load(fold_dir(out, family, k) / HELDOUT_NPZ, allow_pickle=False) as z:
        ids, labels, logits = list(z["ids"]), z["labels"], z["logits"]
    return [str(i) for i in ids], [CODES[i] for i in labels], [CODES[i] for i in logits.argmax(1)]


# ---------------------------------------------------------------- metrics


def official_metric(checkout: Path):
    """hF as the checkout's evaluate.py computes it: its `hierarchical_prf_weighted(lambda 0.75)` per true class, the
    classes it cannot score (never predicted: ZeroDivisionError, its bare except) skipped, the mean in percent."""
    sys.path.insert(0, str(checkout))
    try:
        spec = importlib.util.spec_from_file_location("official_evaluate", checkout / "evaluate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(checkout))

    def hf(truth: list[str], pred: list[str]) -> float:
        pairs = list(zip(pred, truth))
        scores = []
        for c in set(truth):
            try:
                p, r, f = module.hierarchical_prf_weighted(c, pairs, lambda_param=0.75)
            except Exception:  # the official loop's `except: continue`
                continue
            if not (np.isnan(p) or np.isnan(r) or np.isnan(f)):
                scores.append(f)
        return 100 * float(np.mean(scores)) if scores else 0.0

    return hf


def our_metric(truth: list[str], pred: list[str]) -> float:
    from bst_rt.runtime.metrics import hierarchical_f1, to_indices

    return 100 * hierarchical_f1(to_indices(truth), to_indices(pred))


# ---------------------------------------------------------------- table


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return "—"
    return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}" + (f" (n={len(v)})" if len(v) == 1 else "")


def official_fold_done(d: Path, mode: str, k: int) -> bool:
    return (d / "model_output" / mode / f"fold_{k}" / "evaluation" / "results.txt").is_file()


def score_all(checkout: Path, dev: Path, work: Path, off_seeds: list[int], our_seeds: list[int],
              partial: bool = False) -> dict:
    """Per (mode, side, seed): the five folds' hF (official metric; NaN for a fold not trained yet when `partial`),
    checking the folds and that the metrics agree."""
    from bst_rt.train.run import fold_complete

    off_hf = official_metric(checkout)
    ours_split = our_splits(dev)
    res: dict = {m: {"official": {}, "ours": {}} for m in MODES}
    metric_gap, checked = 0.0, 0
    for mode, family in MODES.items():
        for s in off_seeds:
            row = []
            for k in range(N_FOLDS):
                if partial and not official_fold_done(work / "official" / f"seed{s}", mode, k):
                    row.append(float("nan"))
                    continue
                parts, ids, truth, pred, own = read_official(work / "official" / f"seed{s}", mode, k)
                if parts != ours_split[k]:
                    diff = {p: len(parts[p] ^ ours_split[k][p]) for p in parts}
                    raise SystemExit(f"fold {k}: the official split differs from ours (ids differing: {diff})")
                checked += 1
                a, b = off_hf(truth, pred), our_metric(truth, pred)
                metric_gap = max(metric_gap, abs(a - b), abs(a - own))
                row.append(a)
            res[mode]["official"][s] = row
        for s in our_seeds:
            row = []
            for k in range(N_FOLDS):
                if partial and not fold_complete(work / "ours" / f"seed{s}", family, k):
                    row.append(float("nan"))
                    continue
                ids, truth, pred = read_ours(work / "ours" / f"seed{s}", family, k)
                if set(ids) != ours_split[k]["test"]:
                    raise SystemExit(f"{family} fold {k}: our test ids are not the fold's")
                a, b = off_hf(truth, pred), our_metric(truth, pred)
                metric_gap = max(metric_gap, abs(a - b))
                row.append(a)
            res[mode]["ours"][s] = row
    res["metric_gap"], res["folds_checked"] = metric_gap, checked
    return res


def welch(ours: np.ndarray, off: np.ndarray) -> str:
    """Welch's t-test of the two sides' seed means: whether the gap is larger than the seeds' own spread explains
    (printed beside the target, never part of it)."""
    if len(ours) < 2 or len(off) < 2:
        return ""
    from scipy import stats

    r = stats.ttest_ind(ours, off, equal_var=False)
    ci = r.confidence_interval(0.95)
    return f"; Welch's t-test p = {r.pvalue:.2f}, 95 % interval of the gap [{ci.low:+.2f}, {ci.high:+.2f}]"


def table(res: dict, off_seeds: list[int], our_seeds: list[int]) -> tuple[str, bool]:
    lines = [f"| network | side | seeds | " + " | ".join(f"fold {k}" for k in range(N_FOLDS)) + " | mean hF |",
             "|---|---|---|" + "---|" * N_FOLDS + "---|"]
    verdicts, ok = [], True
    for mode, family in MODES.items():
        means = {}
        for side, seeds, name in (("official", off_seeds, f"official `train_test.py` mode `{mode}`"),
                                  ("ours", our_seeds, f"bst-rt `{family}`")):
            rows = np.array([res[mode][side][s] for s in seeds])  # [seeds, folds]
            per_seed = rows.mean(axis=1)
            means[side] = per_seed
            cells = " | ".join(mean_std(rows[:, k]) for k in range(N_FOLDS))
            lines.append(f"| {'multimodal' if mode == 'both' else 'audio-only'} | {name} | "
                         f"{', '.join(map(str, seeds))} | {cells} | **{mean_std(per_seed)}** |")
        off, ours = means["official"][np.isfinite(means["official"])], means["ours"][np.isfinite(means["ours"])]
        if not len(off) or not len(ours):
            ok = False
            verdicts.append(f"{'multimodal' if mode == 'both' else 'audio-only'}: not every fold trained yet "
                            "(partial run): target not measured")
            continue
        gap = ours.mean() - off.mean()
        std = off.std(ddof=1) if len(off) > 1 else 0.0
        met = abs(gap) < TARGET_GAP and abs(gap) <= std and len(off) > 1 and len(ours) > 1
        ok &= met
        verdicts.append(f"{'multimodal' if mode == 'both' else 'audio-only'}: ours − official = {gap:+.2f} points "
                        f"(official std over seeds {std:.2f}, ours {ours.std(ddof=1) if len(ours) > 1 else 0.0:.2f}; "
                        f"target |gap| < {TARGET_GAP} and ≤ 1 std: {'met' if met else 'NOT met'}){welch(ours, off)}")
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n"
    text += (f"- hF in %, the official metric on every test prediction of both sides; the largest difference between "
             f"it, our metric and the official run's own `results.txt` on the same predictions: "
             f"{res['metric_gap']:.4f} points\n"
             "- mean ± std: per fold over the training seeds; mean hF = the mean of a seed's five folds, "
             "mean ± std over the seeds\n"
             f"- folds: the train, validation and test sound_ids of every official fold run "
             f"({res['folds_checked']}) are identical to ours (checked)\n")
    return text, ok


def replace_doc_block(text: str, block: str) -> str:
    if text.count(DOC_START) != 1 or text.count(DOC_END) != 1:
        raise SystemExit(f"the document needs exactly one {DOC_START} ... {DOC_END} block")
    start, end = text.index(DOC_START) + len(DOC_START), text.index(DOC_END)
    return text[:start] + "\n" + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="a checkout of MTG/dcase2026_task1_baseline")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bst-official-baseline"))
    ap.add_argument("--seeds", type=int, default=3, help="training seeds a side (official: 1821, 1822, ...)")
    ap.add_argument("--side", choices=("both", "official", "ours"), default="both")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each side's training")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite the marked block of this markdown file")
    ap.add_argument("--partial", action="store_true",
                    help="train nothing; score the folds both sides have finished so far (the target needs all)")
    args = ap.parse_args(argv)
    checkout = args.official.resolve()
    if not (checkout / "train_test.py").is_file() or not (checkout / "models.py").is_file():
        raise SystemExit(f"{checkout}: not a checkout of the official baseline (no train_test.py / models.py)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    dev = build_corpus(work)
    off_seeds = [OFFICIAL_SEED + i for i in range(args.seeds)]
    our_seeds = list(range(args.seeds))
    if args.partial:
        args.side = "score"
    if args.side in ("both", "official"):
        for s in off_seeds:
            run_official(checkout, dev, work, s, args.threads)
    if args.side in ("both", "ours"):
        for s in our_seeds:
            run_ours(dev, work, s, args.threads)
    if args.side not in ("both", "score"):
        return 0
    res = score_all(checkout, dev, work, off_seeds, our_seeds, args.partial)
    text, ok = table(res, off_seeds, our_seeds)
    text += f"- machine: {machine_line()}\n"
    log(text)
    if args.doc:
        args.doc.write_text(replace_doc_block(args.doc.read_text(encoding="utf-8"), text), encoding="utf-8")
        log(f"wrote {args.doc}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
