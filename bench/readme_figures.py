"""The README's two pictures, regenerated from a `bst-train demo` work folder by the report commands themselves:

    python bench/readme_figures.py [--work artifacts/demo-work]

runs `bst-rt evaluate system1..4.output.csv --labels corpus/eval_labels.csv --report WORK/report-eval` and
`bst-train report WORK/run --html WORK/report-pool`, then copies the confusion matrix and the pool figure to docs/img/.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
COPIES = (("report-eval", "confusion.png", "demo_confusion.png"), ("report-pool", "pools.png", "demo_pools.png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "demo-work")
    args = parser.parse_args()
    work = args.work
    csvs = [work / f"system{s}.output.csv" for s in range(1, 5)]
    missing = [p for p in [*csvs, work / "run" / "registry.json", work / "corpus" / "eval_labels.csv"] if not p.exists()]
    if missing:
        print(f"{missing[0]} is missing: run `bst-train demo --work {work}` first", file=sys.stderr)
        return 1
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "bst-rt"), "evaluate", *map(str, csvs), "--labels",
                    str(work / "corpus" / "eval_labels.csv"), "--report", str(work / "report-eval")],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(bin_dir / "bst-train"), "report", str(work / "run"), "--html", str(work / "report-pool")],
                   check=True, stdout=subprocess.DEVNULL)
    IMG.mkdir(parents=True, exist_ok=True)
    for folder, name, target in COPIES:
        shutil.copyfile(work / folder / name, IMG / target)
        print(f"{work / folder / name} -> {IMG / target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
