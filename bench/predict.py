"""End-to-end prediction benchmark: `bst-rt predict` (fp32, int8) vs the torch chain, side by side, same clips.

Each engine runs in its own subprocess so peak RSS is honest; the table gives clips/s (whole run, and steady state
after the first batch), seconds to the first prediction, peak RSS, and the installed size of a runtime-only venv
(`pip install .`, no extras) next to the torch venv. Ratios are against the torch chain.

    .venv/bin/python bench/predict.py --bundle B --run RUN --eval EVAL_DIR [--rt-venv DIR] [--threads 2]

The torch chain is laion-clap's own file pipeline + text embedding (random weights at the bundle's seed, or
--clap-ckpt) → torch fold models → sklearn ranker → the same decision function (`bst_rt.runtime.policy.decide_items`
via `bst_rt.train.dev_eval.TorchChain`). Both chains decide each clip alone, so the torch chain's batches of
--batch-size and the runtime's whole run give comparable labels ("labels = torch").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_RUNTIME_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    t0 = time.perf_counter()
    from bst_rt.runtime.batch import RunOptions, run_predict
    eval_dir, out, bundle, threads, batch, int8 = sys.argv[1:7]
    first = []
    def progress(done, total):
        if done and not first:
            first.append(time.perf_counter() - t0)
    res = run_predict(RunOptions(eval_dir, out, bundle=bundle, system=1, provider="cpu", threads=int(threads),
                                 batch_size=int(batch), int8=int8 == "1", force=True), progress)
    total = time.perf_counter() - t0
    no_audio = sum(1 for f in res.record["fallback_items"] if f["reason"] != "empty metadata")
    print(json.dumps({"clips": res.record["rows"], "total_s": total, "first_s": first[0],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "labels": [p.label for p in res.predictions], "stages": res.record["stage_seconds"],
                      "audio_clips": res.record["rows"] - no_audio}))
    """
)

_TORCH_CHAIN_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, tempfile, time, warnings
    os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    t0 = time.perf_counter()
    from pathlib import Path
    import numpy as np, torch
    from bst_rt.runtime.atomic import atomic_save_npy
    from bst_rt.runtime.audio import load_audio
    from bst_rt.runtime.datasets import read_eval_package
    from bst_rt.runtime.layout import CLASS_TEXT_FILE, EMBEDDING_DIRS, features_dir
    from bst_rt.runtime.text import mask_class_words
    from bst_rt.runtime.bundle import load_bundle
    from bst_rt.train.clap import load_clap, reference_audio_embedding_from_files, reference_text_embedding
    from bst_rt.train.dev_eval import TorchChain
    eval_dir, run_dir, bundle, threads, batch, ckpt, seed = sys.argv[1:8]
    torch.set_num_threads(int(threads))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_clap(Path(ckpt) if ckpt else None, random_weights=not ckpt, seed=int(seed))
    clips = read_eval_package(Path(eval_dir)).clips
    root = Path(tempfile.mkdtemp()); feats = features_dir(root)
    atomic_save_npy(feats / CLASS_TEXT_FILE, load_bundle(Path(bundle)).class_text_embeddings())
    chain = TorchChain(run_dir, root)
    labels, first, b = [], None, int(batch)
    for s in range(0, len(clips), b):
        part = clips[s:s + b]
        ok = []
        for c in part:
            try:
                if c.audio_path is not None and c.audio_path.stat().st_size > 0:
                    load_audio(c.audio_path); ok.append(c)
            except Exception:
                pass
        if ok:
            for c, e in zip(ok, reference_audio_embedding_from_files(model, [c.audio_path for c in ok])):
                atomic_save_npy(feats / EMBEDDING_DIRS["audio"] / f"{c.id}.npy", e)
        txt = [c for c in part if c.text]
        if txt:
            t = reference_text_embedding(model, [c.text for c in txt])
            m = reference_text_embedding(model, [mask_class_words(c.text) for c in txt])
            for c, te, me in zip(txt, t, m):
                atomic_save_npy(feats / EMBEDDING_DIRS["text"] / f"{c.id}.npy", te)
                atomic_save_npy(feats / EMBEDDING_DIRS["text_masked"] / f"{c.id}.npy", me)
        out = chain.predict(part)[1]
        labels += out.labels.tolist()
        if first is None:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from torch.utils.flop_counter import FlopCounterMode
    longest = max((c for c in clips if c.audio_path is not None and c.audio_path.is_file()
                   and c.audio_path.stat().st_size > 0), key=lambda c: c.audio_path.stat().st_size)
    with FlopCounterMode(display=False) as counter:  # one clip over 10 s: the fusion path the ONNX graph always runs
        reference_audio_embedding_from_files(model, [longest.audio_path])
    from bst_rt.runtime.taxonomy import CODES
    print(json.dumps({"clips": len(clips), "total_s": total, "first_s": first, "rss_mb": rss,
                      "labels": [CODES[i] for i in labels], "audio_gflop_per_clip": counter.get_total_flops() / 1e9}))
    """
)


_FRONT_END_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, soundfile as sf, soxr
    from pathlib import Path
    from bst_rt.runtime.audio import SAMPLE_RATE_HZ, quantize_int16, waveform_to_mel_fusion
    from bst_rt.runtime.datasets import read_eval_package
    t = {"decode": 0.0, "resample": 0.0, "mel": 0.0}
    for c in read_eval_package(Path(sys.argv[1])).clips:
        try:
            t0 = time.perf_counter()
            x, sr = sf.read(str(c.audio_path), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            t1 = time.perf_counter()
            y = x if sr == SAMPLE_RATE_HZ else soxr.resample(x, sr, SAMPLE_RATE_HZ, quality="HQ")
            t2 = time.perf_counter()
            waveform_to_mel_fusion(quantize_int16(y).astype(np.float32) / 32767.0)
            t3 = time.perf_counter()
        except Exception:
            continue
        t["decode"] += t1 - t0; t["resample"] += t2 - t1; t["mel"] += t3 - t2
    print(json.dumps(t))
    """
)

_MATMUL_PEAK_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, onnx, onnxruntime as ort
    from onnx import TensorProto, helper
    threads = int(sys.argv[1]); best = 0.0
    for m, k, n in ((4096, 768, 768), (2048, 2048, 2048), (4096, 384, 1536)):
        g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions(); opts.intra_op_num_threads = threads; opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = {"a": np.random.rand(m, k).astype(np.float32), "b": np.random.rand(k, n).astype(np.float32)}
        sess.run(None, feeds)
        for _ in range(5):
            t0 = time.perf_counter(); sess.run(None, feeds); dt = time.perf_counter() - t0
            best = max(best, 2 * m * k * n / dt / 1e9)
    print(json.dumps({"gflops": best}))
    """
)


def _child(code: str, args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def _runtime_venv(path: Path | None) -> Path:
    """A runtime-only venv (`pip install .`, no extras); built in a temp dir unless given."""
    if path is not None and (path / "bin" / "bst-rt").exists():
        return path
    path = path or Path(tempfile.mkdtemp()) / "rt-venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", str(ROOT)], check=True)
    return path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="run folder the bundle was exported from")
    ap.add_argument("--eval", type=Path, required=True, help="evaluation package")
    ap.add_argument("--clap-ckpt", default="", help="checkpoint of the bundle (default: random weights, --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rt-venv", type=Path, default=None, help="existing runtime-only venv to measure")
    ap.add_argument("--torch-venv", type=Path, default=ROOT / ".venv")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp())
    rows = {
        "torch chain": _child(_TORCH_CHAIN_CHILD, [a.eval, a.run, a.bundle, a.threads, a.batch_size, a.clap_ckpt, a.seed]),
        "bst-rt fp32": _child(_RUNTIME_CHILD, [a.eval, tmp / "fp32.csv", a.bundle, a.threads, a.batch_size, 0]),
        "bst-rt int8": _child(_RUNTIME_CHILD, [a.eval, tmp / "int8.csv", a.bundle, a.threads, a.batch_size, 1]),
    }
    front = _child(_FRONT_END_CHILD, [a.eval])
    peak = _child(_MATMUL_PEAK_CHILD, [a.threads])["gflops"]
    rt_venv = _runtime_venv(a.rt_venv)
    sizes = {"runtime venv": _du_mb(rt_venv), "torch venv": _du_mb(a.torch_venv)}
    ref = rows["torch chain"]
    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores; threads {a.threads}; batch {a.batch_size}; "
          f"{ref['clips']} clips from {a.eval}")
    head = f"{'engine':<14}{'clips/s':>9}{'x torch':>9}{'steady/s':>10}{'x torch':>9}{'first (s)':>11}" \
           f"{'peak RSS MB':>13}{'x torch':>9}{'labels = torch':>16}"
    print(head)
    for name, r in rows.items():
        rate = r["clips"] / r["total_s"]
        steady = (r["clips"] - a.batch_size) / max(r["total_s"] - r["first_s"], 1e-9)
        ref_rate = ref["clips"] / ref["total_s"]
        ref_steady = (ref["clips"] - a.batch_size) / max(ref["total_s"] - ref["first_s"], 1e-9)
        agree = sum(x == y for x, y in zip(r["labels"], ref["labels"])) / len(ref["labels"])
        r.update(rate=rate, steady=steady, agree=agree)
        print(f"{name:<14}{rate:>9.2f}{rate / ref_rate:>8.2f}x{steady:>10.2f}{steady / ref_steady:>8.2f}x"
              f"{r['first_s']:>11.1f}{r['rss_mb']:>13.0f}{r['rss_mb'] / ref['rss_mb']:>8.2f}x{agree:>16.3f}")
    _print_stages(rows, front, peak, ref.get("audio_gflop_per_clip"))
    print(f"installed size: runtime-only venv {sizes['runtime venv']:.0f} MB, torch venv {sizes['torch venv']:.0f} MB "
          f"(ratio {sizes['runtime venv'] / sizes['torch venv']:.3f}); runtime venv at {rt_venv}")
    if a.json:
        a.json.write_text(json.dumps({"rows": {k: {x: v for x, v in r.items() if x != "labels"} for k, r in rows.items()},
                                      "sizes_mb": sizes, "front_end_split_s": front, "matmul_peak_gflops": peak},
                                     indent=2))


def _print_stages(rows: dict, front: dict, peak: float, gflop_per_clip: float | None) -> None:
    """Per-stage wall seconds of the bst-rt runs (the run record's `stage_seconds`; the front end runs in a worker
    thread, overlapped with the graphs, so stages can add up to more than the run), the front end split into
    decode / resample / mel by a separate one-thread pass over the same files, and the audio graph against ORT's
    fp32 MatMul peak on this machine."""
    rt = {k: r for k, r in rows.items() if "stages" in r}
    names = sorted({s for r in rt.values() for s in r["stages"]})
    print(f"per-stage seconds ({', '.join(rt)}); 'other' = run time not in a stage")
    print(f"{'stage':<34}" + "".join(f"{k:>14}" for k in rt))
    for name in names:
        print(f"{name:<34}" + "".join(f"{r['stages'].get(name, 0.0):>14.2f}" for r in rt.values()))
    print(f"{'other':<34}" + "".join(f"{r['total_s'] - sum(r['stages'].values()):>14.2f}" for r in rt.values()))
    print("front end alone, one thread: " + ", ".join(f"{k} {v:.2f} s" for k, v in front.items()))
    print(f"ORT fp32 MatMul peak on this machine: {peak:.0f} GFLOPS")
    if gflop_per_clip:
        for k, r in rt.items():
            per_clip = r["stages"].get("audio graph", 0.0) / max(r["audio_clips"], 1)
            achieved = gflop_per_clip / per_clip if per_clip else 0.0
            r.update(audio_graph_ms_per_clip=1e3 * per_clip, audio_graph_gflops=achieved)
            print(f"{k}: audio graph {1e3 * per_clip:.1f} ms a clip, {gflop_per_clip:.1f} GFLOP a clip -> "
                  f"{achieved:.0f} GFLOPS = {achieved / peak:.0%} of the fp32 MatMul peak")


if __name__ == "__main__":
    main()
