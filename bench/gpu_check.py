"""CUDA vs CPU on one bundle: are the providers really in use, do the outputs agree, and how fast is each?

Run on a machine with an NVIDIA GPU and a runtime venv that has onnxruntime-gpu (see docs/gpu.md):

    python bench/gpu_check.py --bundle artifacts/demo --eval EVAL_DIR [--batch-size 16] [--clips 64]

Prints the providers each session uses, max |CPU - CUDA| of the embeddings and calibrated family distributions,
label agreement for the four systems, and clips/s for each provider (after one warm-up batch). Exit code 1 if CUDA
is not really used or a label differs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _timed(predictor, clips, batch: int) -> tuple[float, list]:
    predictor.predict_batch(clips[:batch], batch)  # warm-up: CUDA kernels, arena growth
    t0 = time.perf_counter()
    out = []
    for s in range(0, len(clips), batch):
        out += predictor.predict_batch(clips[s:s + batch], batch)
    return len(clips) / (time.perf_counter() - t0), out


def main() -> int:
    import onnxruntime as ort

    from bst_rt.runtime.bundle import load_bundle
    from bst_rt.runtime.datasets import read_eval_package
    from bst_rt.runtime.predict import Predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--clips", type=int, default=64)
    a = ap.parse_args()

    print(f"onnxruntime {ort.__version__}, device {ort.get_device()}, available {ort.get_available_providers()}")
    bundle = load_bundle(a.bundle)
    clips = read_eval_package(a.eval).clips[: a.clips]
    cpu = Predictor.load(bundle, system=1, provider="cpu")
    gpu = Predictor.load(bundle, system=1, provider="cuda")  # raises if CUDA is not really usable
    used = gpu.providers
    print("CUDA predictor sessions run on:", used)
    ok = all(p == "cuda" for p in used.values())

    ev_cpu, ev_gpu = cpu._evidence(clips), gpu._evidence(clips)
    diff = float(np.abs(ev_cpu.family_probs - ev_gpu.family_probs).max())
    print(f"family distributions: max |CPU - CUDA| {diff:.2e} over {len(clips)} clips")
    cpu_all = cpu.predict_systems(clips, (1, 2, 3, 4))
    gpu_all = gpu.predict_systems(clips, (1, 2, 3, 4))
    for sid in (1, 2, 3, 4):
        a_, b_ = cpu_all[sid], gpu_all[sid]
        agree = float(np.mean([x.label == y.label for x, y in zip(a_, b_)]))
        sdiff = float(np.max(np.abs([x.score - y.score for x, y in zip(a_, b_)])))
        print(f"system {sid}: label agreement {agree:.4f}, max |score diff| {sdiff:.2e}")
        ok &= agree == 1.0
    for name, pred in (("cpu", cpu), ("cuda", gpu)):
        rate, _ = _timed(pred, clips, a.batch_size)
        print(f"{name}: {rate:.2f} clips/s (batch {a.batch_size}, {len(clips)} clips, after warm-up)")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
