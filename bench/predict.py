"""End-to-end prediction benchmark: `bst-rt predict` (fp32, int8) vs the torch chain, side by side, same clips.

One command builds its own inputs and regenerates the README's "Measured" block:

    .venv/bin/python bench/predict.py [--work artifacts/bench] [--threads 2] [--readme] [--json FILE]

Without --bundle/--run it runs `bst-train demo --int8` into WORK (WORK/demo-work, bundle WORK/bundle; never
recorded as the user's default bundle; a rerun skips what exists) and measures two evaluation sets, each its own
table: the demo's synthetic eval package (40 clips, hostile entries included) and the shared real recordings
(--real-audio, default `<repo>/../shared/audio/librosa-data` when it exists; every .ogg at
full length, built into WORK/real-eval). With --bundle B --run RUN [--eval EVAL] it measures a bundle of your own.

Each engine runs in its own subprocess so peak RSS is honest; per set the table gives clips/s (whole run, and steady
state after the first batch), the ratio to the torch chain, seconds to the first prediction, peak RSS and the share
of labels equal to the torch chain's; then the per-stage seconds of the bst-rt runs, ORT's fp32 MatMul peak on this
machine (best over shapes typical of the CLAP graphs), the audio graph's share of it (in the run, and alone), and the
issue-14 targets met or missed. --readme rewrites the block between the README markers (atomically).

The torch chain is the reference: laion-clap's own file pipeline + text embedding, plain AND masked text for every
text (random weights at the bundle's seed, or --clap-ckpt) → torch fold models → sklearn ranker → the same decision
function (`bst_rt.runtime.policy.decide_items` via `bst_rt.train.dev_eval.TorchChain`). Both chains decide each clip
alone, so the torch chain's batches of --batch-size and the runtime's whole run give comparable labels.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_START = "<!-- bench:predict:start -->"
README_END = "<!-- bench:predict:end -->"
#: issue 14's targets (steady state, side by side, same clips)
TARGET_FP32_X, TARGET_INT8_X, TARGET_INT8_AGREE, TARGET_PEAK_SHARE = 3.0, 5.0, 0.97, 0.5
#: issue 24's: int8 over fp32 on a CPU without VNNI/AMX, fp32's share of its graphs-alone bound
TARGET_INT8_OVER_FP32, TARGET_BOUND_SHARE = 1.2, 0.95
#: the int8 format bst-train exported before issue 24 ("today's" in its targets)
LEGACY_FORMAT = "uint8-per-channel"
ENGINES = ("torch chain", "bst-rt fp32", "bst-rt int8")

_RUNTIME_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    t0 = time.perf_counter()
    import numpy as np
    from bst_rt.runtime.predict_run import RunOptions, run_predict
    eval_dir, out, bundle, threads, batch, int8 = sys.argv[1:7]
    first = []
    def progress(done, total):
        if done and not first:
            first.append(time.perf_counter() - t0)
    res = run_predict(RunOptions(eval_dir=eval_dir, out=out, bundle=bundle, system=1, provider="cpu", threads=int(threads),
                                 batch_size=int(batch), int8=int8 == "1", force=True), progress)
    total = time.perf_counter() - t0
    no_audio = sum(1 for f in res.record["fallback_items"] if f["reason"] != "empty metadata")
    print(json.dumps({"clips": res.record["rows"], "total_s": total, "first_s": first[0],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "labels": [p.label for p in res.predictions], "stages": res.record["stage_seconds"],
                      "ids": [p.id for p in res.predictions],
                      "margins": [float(np.diff(np.sort(p.probabilities)[-2:])[0]) for p in res.predictions],
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
    stages = {"audio (laion file pipeline + HTSAT)": 0.0, "text (plain + masked, 77 tokens)": 0.0,
              "decision (torch folds + sklearn ranker)": 0.0}
    for s in range(0, len(clips), b):
        t_a = time.perf_counter()
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
        t_t = time.perf_counter(); stages["audio (laion file pipeline + HTSAT)"] += t_t - t_a
        txt = [c for c in part if c.text]
        if txt:
            t = reference_text_embedding(model, [c.text for c in txt])
            m = reference_text_embedding(model, [mask_class_words(c.text) for c in txt])
            for c, te, me in zip(txt, t, m):
                atomic_save_npy(feats / EMBEDDING_DIRS["text"] / f"{c.id}.npy", te)
                atomic_save_npy(feats / EMBEDDING_DIRS["text_masked"] / f"{c.id}.npy", me)
        t_d = time.perf_counter(); stages["text (plain + masked, 77 tokens)"] += t_d - t_t
        out = chain.predict(part)[1]
        stages["decision (torch folds + sklearn ranker)"] += time.perf_counter() - t_d
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
    print(json.dumps({"clips": len(clips), "total_s": total, "first_s": first, "rss_mb": rss, "torch_stages": stages,
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
    threads, repeats, min_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[4])
    shapes = json.loads(sys.argv[3])
    per_shape = {}
    for m, k, n in shapes:
        g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions(); opts.intra_op_num_threads = threads; opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = {"a": np.random.rand(m, k).astype(np.float32), "b": np.random.rand(k, n).astype(np.float32)}
        for _ in range(2):  # warm-up: first runs allocate and page in
            sess.run(None, feeds)
        best, runs, spent = 0.0, 0, 0.0
        while runs < repeats or spent < min_s:  # a small shape gets more runs: more chances at a quiet moment
            t0 = time.perf_counter(); sess.run(None, feeds); dt = time.perf_counter() - t0
            best, runs, spent = max(best, 2 * m * k * n / dt / 1e9), runs + 1, spent + dt
        per_shape[f"{m}x{k}x{n}"] = best
    top = max(per_shape, key=per_shape.get)
    print(json.dumps({"gflops": per_shape[top], "shape": top, "per_shape": per_shape, "repeats": repeats}))
    """
)

_AUDIO_GRAPH_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from pathlib import Path
    from bst_rt.runtime.audio import CHUNK_FRAMES, MEL_BINS
    from bst_rt.runtime.bundle import load_bundle
    from bst_rt.runtime.encoders import AudioEncoder
    bundle, threads, batch, runs, int8 = sys.argv[1:6]
    b = load_bundle(Path(bundle), verify=False)
    enc = AudioEncoder(b.path(b.graph("audio_encoder", int8=int8 == "1").file), "cpu", int(threads))
    n = int(batch)
    rng = np.random.default_rng(0)  # dB-scaled random mels; longer=True: the fusion path of a clip over 10 s
    mel = (rng.standard_normal((n, 4, CHUNK_FRAMES, MEL_BINS)) * 15.0 - 40.0).astype(np.float32)
    longer = np.ones(n, dtype=bool)
    enc.embed_mel(mel, longer)  # warm-up
    times = []
    for _ in range(int(runs)):
        t0 = time.perf_counter(); enc.embed_mel(mel, longer); times.append(time.perf_counter() - t0)
    print(json.dumps({"batch": n, "runs": int(runs), "best_s": min(times), "ms_per_clip": 1e3 * min(times) / n}))
    """
)

_GRAPH_FLOPS_CHILD = textwrap.dedent(
    """
    import json, os, sys, warnings
    os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import numpy as np, torch
    from torch.utils.flop_counter import FlopCounterMode
    from bst_rt.export.clap import BranchFreeAudio, random_mel
    from bst_rt.train.clap import load_clap
    torch.set_num_threads(int(sys.argv[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = BranchFreeAudio(load_clap(None, random_weights=True, seed=0)).eval()  # FLOPs do not depend on weights
    mel, _ = random_mel(1, seed=1)
    out = {}
    for name, flag in (("fusion", True), ("short", False)):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            wrapper(torch.from_numpy(mel), torch.from_numpy(np.array([flag])))
        out[name] = counter.get_total_flops() / 1e9
    print(json.dumps(out))
    """
)

_INT8_GRAPHS_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from pathlib import Path
    from bst_rt.runtime.audio import CHUNK_FRAMES, MEL_BINS, file_to_mel_fusion
    from bst_rt.runtime.datasets import read_eval_package
    from bst_rt.runtime.encoders import AudioEncoder, TextEncoder
    kind, tokenizer, threads, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    graphs, eval_dirs = json.loads(sys.argv[5]), json.loads(sys.argv[6])
    clips = [c for d in eval_dirs for c in read_eval_package(Path(d)).clips]
    if kind == "audio":
        encs = {f: AudioEncoder(p, "cpu", threads, rows_per_run=1) for f, p in graphs.items()}
        rng = np.random.default_rng(0)  # timed input: dB-scaled random mel on the fusion path (a clip over 10 s)
        mel = (rng.standard_normal((1, 4, CHUNK_FRAMES, MEL_BINS)) * 15.0 - 40.0).astype(np.float32)
        call = lambda e: e.embed_mel(mel, np.ones(1, dtype=bool))
        items = []
        for c in clips:  # cosine inputs: 12 decodable clips of the sets, those on the fusion path (over 10 s) first
            try:
                items.append(file_to_mel_fusion(c.audio_path))
            except Exception:
                pass
        items = sorted(items, key=lambda m: not m[1])[:12]
        embed = lambda e: np.concatenate([e.embed_mel(m[None], np.array([lg])) for m, lg in items])
    else:
        encs = {f: TextEncoder(p, tokenizer, "cpu", threads, rows_per_run=1) for f, p in graphs.items()}
        enc0 = next(iter(encs.values()))
        ids, _ = enc0.tokenizer.encode_batch([" ".join(c.text for c in clips if c.text)])
        ids = np.ascontiguousarray(ids[:, :32]); ids[0, -1] = 2  # 32 tokens ending in </s>
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        call = lambda e: e.session.run(None, feeds)
        texts = sorted({c.text for c in clips if c.text})
        embed = lambda e: e.embed(texts)
    best = {f: float("inf") for f in encs}
    for e in encs.values():
        call(e)  # warm-up
    for _ in range(rounds):  # interleaved: a passing load hits every format alike
        for f, e in encs.items():
            t0 = time.perf_counter(); call(e); best[f] = min(best[f], time.perf_counter() - t0)
    emb = {f: embed(e) for f, e in encs.items()}
    ref = emb["fp32"]
    cos = {f: float(np.min(np.sum(v * ref, 1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)))
           for f, v in emb.items()}
    print(json.dumps({"ms": {f: 1e3 * t for f, t in best.items()}, "cosine_min": cos, "rows": len(ref),
                      "rounds": rounds}))
    """
)

_REQUANTIZE_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from bst_rt.export.bundle import requantize_bundle
    from bst_rt.export.validate import ParityError
    try:
        requantize_bundle(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], log=lambda m: None)
    except ParityError as exc:  # the export's own gate: no bundle is written in this format
        print(json.dumps({"parity_failed": str(exc).split(": ", 1)[-1]}))
    else:
        print("{}")
    """
)
#: the int8 CLAP graphs alone in a format (no bundle: `requantize_bundle` writes none that fails its parity gate,
#: nor the runtime one that saturates on this CPU), written in a staging folder and renamed into place
_QUANTIZE_GRAPHS_CHILD = textwrap.dedent(
    """
    import shutil, sys
    from pathlib import Path
    from bst_rt.export.clap import quantize_clap_int8_from_copies
    src, out, fmt = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    staging = out.parent / ("." + out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    quantize_clap_int8_from_copies(src, staging, fmt)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print("{}")
    """
)

_DEMO_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bst_rt.export.demo import DemoOptions, format_summary, run_demo
    work, bundle, threads = sys.argv[1:4]
    summary = run_demo(DemoOptions(work=Path(work), bundle=Path(bundle), threads=int(threads), int8=True,
                                   record_default=False), log=lambda m: print(m, flush=True))
    print(format_summary(summary), flush=True)
    """
)

#: MatMul shapes of the CLAP graphs: HTSAT's Swin blocks (4096 tokens x 96/384 channels, the MLPs), the text
#: tower's MLP at 616 tokens (8 texts x 77), plus square ones where the kernels reach their best
PEAK_SHAPES = ((4096, 96, 384), (4096, 384, 96), (4096, 768, 768), (4096, 384, 1536), (616, 768, 3072),
               (616, 3072, 768), (1024, 1024, 1024), (2048, 2048, 2048))


def _child(code: str, args: list, *, stream: bool = False) -> dict:
    cmd = [sys.executable, "-c", code, *map(str, args)]
    if stream:  # long and chatty (the demo): show its progress, keep no output
        proc = subprocess.run(cmd, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark child failed (exit {proc.returncode}); its output is above")
        return {}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    # the 1-minute load average as the child ends: the child itself adds about its thread count; more means
    # other work shared the machine during the measurement
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_end": os.getloadavg()[0]}


def _du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def _runtime_venv(path: Path | None) -> Path:
    """A runtime-only venv (`pip install .[cpu]`, nothing else); built in a temp dir unless given."""
    if path is not None and (path / "bin" / "bst-rt").exists():
        return path
    path = path or Path(tempfile.mkdtemp()) / "rt-venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", f"{ROOT}[cpu]"], check=True, capture_output=True)
    return path


def _venv_mb(venv: Path) -> float:
    """A venv's size plus the site-packages its .pth files chain to (a worktree venv reuses main's packages)."""
    size, seen = _du_mb(venv), set()
    for pth in venv.glob("lib/python*/site-packages/*.pth"):
        for line in pth.read_text(encoding="utf-8", errors="replace").splitlines():
            target = Path(line.strip())
            if line.startswith(("import", "#")) or not target.is_absolute() or not target.is_dir():
                continue
            if target in seen or target.resolve().is_relative_to(venv.resolve()) or ROOT in target.resolve().parents \
                    or target.resolve() == ROOT:
                continue
            seen.add(target)
            size += _du_mb(target)
    return size


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_flags_text() -> str:
    from bst_rt.runtime.int8_format import describe_cpu

    return describe_cpu()


def _ort_version() -> str:
    from importlib import metadata

    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


# ---- inputs -----------------------------------------------------------------------------------------------------
def default_real_audio() -> Path | None:
    """The shared real recordings: `<repo>/../shared` (the main checkout), `<repo>/shared` (a device machine's copy)
    or `<repo>/../../shared` (a worktree one level further down)."""
    for base in (ROOT.parent / "shared", ROOT / "shared", ROOT.parents[1] / "shared"):
        if (base / "audio" / "librosa-data").is_dir():
            return base / "audio" / "librosa-data"
    return None


def real_clip_id(file_name: str) -> str:
    """A stable anonymous id per recording: uuid5 of its file name (the same file gets the same id everywhere)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, file_name))


def _real_rows(src: Path) -> list[tuple[Path, tuple[str, str, str, str]]]:
    rows = []
    for audio in sorted(src.glob("*.ogg")):
        txt = audio.with_suffix(".txt")
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines() if txt.is_file() else []
        description = lines[0].strip() if lines else ""
        rows.append((audio, (real_clip_id(audio.name), audio.stem.replace("_", " "), "", description)))
    return rows


def build_real_eval(src: Path, dst: Path) -> Path:
    """An evaluation package of the real recordings in `src` (every .ogg, full length, copied as is): metadata CSV
    `anonymous_id,title,tags,description` (title = file stem with '_' -> ' ', no tags, description = the first line of
    the .txt beside the audio) + `audio/<id>.ogg`. Written in a staging folder renamed into place; a package already
    there with the same ids is kept (resumable)."""
    from bst_rt.runtime.datasets import EVAL_COLUMNS

    src, dst = Path(src), Path(dst)
    rows = _real_rows(src)
    if not rows:
        raise SystemExit(f"{src}: no .ogg recordings to build the real evaluation package from")
    meta = dst / "eval_metadata.csv"
    if meta.is_file():
        with meta.open(encoding="utf-8", newline="") as fh:
            have = [r["anonymous_id"] for r in csv.DictReader(fh)]
        if have == [r[0] for _, r in rows] and all((dst / "audio" / f"{r[0]}.ogg").is_file() for _, r in rows):
            return dst
    staging = dst.with_name(f".{dst.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "audio").mkdir(parents=True)
    for audio, row in rows:
        shutil.copyfile(audio, staging / "audio" / f"{row[0]}.ogg")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EVAL_COLUMNS)
    writer.writerows(row for _, row in rows)
    (staging / "eval_metadata.csv").write_text(buf.getvalue(), encoding="utf-8")
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, dst)
    return dst


def _bundle_has_int8(bundle: Path) -> bool:
    """Int8 graphs in the format `bst-train export --int8` writes now (the runtime's `Bundle.has_int8` and
    `Bundle.int8_format`); a missing or unreadable bundle has none."""
    from bst_rt.runtime.errors import BstError
    from bst_rt.runtime.int8_format import DEFAULT_INT8_FORMAT

    try:
        return _bundle_int8_format(bundle) == DEFAULT_INT8_FORMAT
    except BstError:
        return False


def build_demo_inputs(work: Path, threads: int) -> tuple[Path, Path, Path]:
    """`bst-train demo --int8` into WORK (not recorded as the default bundle); skipped when its bundle is there."""
    demo_work, bundle = work / "demo-work", work / "bundle"
    if not ((demo_work / "demo_summary.json").is_file() and _bundle_has_int8(bundle)):
        print(f"building the bench inputs: bst-train demo --int8 --work {demo_work} --bundle {bundle}", flush=True)
        _child(_DEMO_CHILD, [demo_work, bundle, threads], stream=True)
    return bundle, demo_work / "run", demo_work / "corpus" / "eval"


# ---- measuring --------------------------------------------------------------------------------------------------
def _rates(r: dict, batch: int) -> tuple[float, float]:
    return r["clips"] / r["total_s"], (r["clips"] - batch) / max(r["total_s"] - r["first_s"], 1e-9)


def measure_set(eval_dir: Path, a: argparse.Namespace, bundle: Path, run: Path, tmp: Path,
                gflop: float | None) -> dict:
    """The three engines on one evaluation set, each in its own process, one after the other."""
    rows = {
        "torch chain": _child(_TORCH_CHAIN_CHILD, [eval_dir, run, bundle, a.threads, a.batch_size, a.clap_ckpt, a.seed]),
        "bst-rt fp32": _child(_RUNTIME_CHILD, [eval_dir, tmp / "fp32.csv", bundle, a.threads, a.batch_size, 0]),
        "bst-rt int8": _child(_RUNTIME_CHILD, [eval_dir, tmp / "int8.csv", bundle, a.threads, a.batch_size, 1]),
    }
    ref = rows["torch chain"]
    ref_rate, ref_steady = _rates(ref, a.batch_size)
    for r in rows.values():
        rate, steady = _rates(r, a.batch_size)
        agree = sum(x == y for x, y in zip(r["labels"], ref["labels"])) / len(ref["labels"])
        same = sum(x == y for x, y in zip(r["labels"], ref["labels"]))
        r.update(rate=rate, steady=steady, rate_x=rate / ref_rate, steady_x=steady / ref_steady, agree=agree,
                 same=same, rss_x=r["rss_mb"] / ref["rss_mb"])
    for r in rows.values():
        if "stages" in r and gflop:
            per_clip = r["stages"].get("audio graph", 0.0) / max(r["audio_clips"], 1)
            r.update(audio_graph_ms_per_clip=1e3 * per_clip, audio_graph_gflops=gflop / per_clip if per_clip else 0.0)
    return {"eval_dir": str(eval_dir), "clips": ref["clips"], "rows": rows,
            "front_end_split_s": {k: v for k, v in _child(_FRONT_END_CHILD, [eval_dir]).items() if k != "load_end"},
            "audio_gflop_per_clip": gflop,
            "laion_gflop_longest_clip": ref.get("audio_gflop_per_clip")}


def _hardware(a: argparse.Namespace, bundle: Path, gflop: float) -> tuple[dict, dict]:
    """ORT's fp32 MatMul peak over PEAK_SHAPES, and the fp32 audio graph alone at the bench batch size."""
    peak = _child(_MATMUL_PEAK_CHILD, [a.threads, a.peak_repeats, json.dumps(PEAK_SHAPES), a.peak_seconds])
    isolated = _child(_AUDIO_GRAPH_CHILD, [bundle, a.threads, a.batch_size, a.graph_runs, 0])
    return peak, {**isolated, "gflops": gflop / (isolated["ms_per_clip"] / 1e3)}


#: the weight formats the int8 table compares (bst_rt.runtime.int8_format.INT8_FORMATS), fp32 first
INT8_TABLE_FORMATS = ("uint8-per-channel", "int8-7bit-per-tensor", "int8-7bit-per-channel", "int8-per-channel")


def _bundle_int8_format(bundle: Path) -> str:
    from bst_rt.runtime.bundle import load_bundle

    b = load_bundle(bundle, verify=False)
    spec = b.manifest.graphs.get("audio_encoder_int8")  # read as recorded: a format refused here is still measured
    return b.int8_format(spec) if spec is not None else ""


def _format_graphs(bundle: Path, work: Path, fmt: str) -> Path:
    out = work / "int8-graphs" / fmt
    if not out.is_dir():
        _child(_QUANTIZE_GRAPHS_CHILD, [bundle, out, fmt])
    return out


def _format_bundle(bundle: Path, work: Path, fmt: str) -> tuple[Path, str | None]:
    """(folder, why no bundle): the bench bundle with its int8 graphs in `fmt` (`bst_rt.export.bundle.
    requantize_bundle`; kept for reruns; why None); for a format this runtime refuses on this CPU or the export's
    cosine gate refuses, a folder with only those two graphs and the reason (their graph figures are still measured;
    no bundle is written with them)."""
    if _bundle_int8_format(bundle) == fmt:
        return bundle, None
    from bst_rt.runtime.errors import BstError
    from bst_rt.runtime.int8_format import check_int8_format

    try:
        check_int8_format(fmt, fmt)
    except BstError:
        return _format_graphs(bundle, work, fmt), "refused on this CPU"
    out = work / "int8-formats" / fmt
    try:
        if _bundle_int8_format(out) == fmt:
            return out, None
    except BstError:
        pass
    failed = _child(_REQUANTIZE_CHILD, [bundle, out, fmt]).get("parity_failed")
    if failed:
        return _format_graphs(bundle, work, fmt), f"below the export's cosine gate ({failed})"
    return out, None


def int8_formats(a: argparse.Namespace, bundle: Path, sets: dict, eval_sets: dict, tmp: Path) -> dict:
    """Each int8 weight format side by side on the machine at hand: every CLAP graph's ms a call (one thread, batch
    1, best of interleaved calls), its min cosine to fp32 on the sets' own clips and texts, and the system-1 labels
    of the whole runtime against the fp32 runtime's (flips with their fp32 margins); a format the runtime refuses on
    this CPU, or the export's cosine gate refuses, gets graph figures only."""
    work = a.work.resolve()
    made = {fmt: _format_bundle(bundle, work, fmt) for fmt in INT8_TABLE_FORMATS}
    bundles = {fmt: path for fmt, (path, _) in made.items()}
    from bst_rt.runtime.encoders import AUDIO_GRAPH, AUDIO_INT8, TEXT_GRAPH, TEXT_INT8, TOKENIZER_FILE

    graphs = {}
    for kind, fp32, int8 in (("audio", AUDIO_GRAPH, AUDIO_INT8), ("text", TEXT_GRAPH, TEXT_INT8)):
        files = {"fp32": str(bundle / fp32), **{f: str(b / int8) for f, b in bundles.items()}}
        graphs[kind] = _child(_INT8_GRAPHS_CHILD, [kind, bundle / TOKENIZER_FILE, 1, a.format_rounds,
                                                   json.dumps(files), json.dumps([str(d) for d in eval_sets.values()])])
    shipped = _bundle_int8_format(bundle)
    labels: dict = {}
    for name, s in sets.items():
        fp32 = s["rows"]["bst-rt fp32"]
        labels[name] = {}
        for fmt, b in bundles.items():
            if made[fmt][1] is not None:
                labels[name][fmt] = {"refused": made[fmt][1]}
                continue
            r = s["rows"]["bst-rt int8"] if fmt == shipped else _child(
                _RUNTIME_CHILD, [s["eval_dir"], tmp / f"int8-{fmt}.csv", b, a.threads, a.batch_size, 1])
            same = sum(x == y for x, y in zip(r["labels"], fp32["labels"]))
            flips = [(i, x, y, m) for i, x, y, m in zip(fp32["ids"], fp32["labels"], r["labels"], fp32["margins"])
                     if x != y]
            labels[name][fmt] = {"same": same, "agree": same / len(fp32["labels"]), "flips": flips,
                                 "steady": _rates(r, a.batch_size)[1]}
    return {"formats": list(INT8_TABLE_FORMATS), "graphs": graphs, "labels": labels, "shipped": shipped}


def int8_table_lines(t: dict, sets: dict) -> list[str]:
    """The int8 format table: graph speed and cosine per format, label agreement and steady clips/s per set."""
    names = list(sets)
    head = ("| format | audio ms a call | text ms a call (32 tokens) | audio cosine min | text cosine min | "
            + " | ".join(f"labels = fp32, {n}" for n in names) + " | "
            + " | ".join(f"steady clips/s, {n}" for n in names) + " |")
    out = [head, "|" + "---|" * (5 + 2 * len(names))]
    g = t["graphs"]
    fp32_steady = {n: sets[n]["rows"]["bst-rt fp32"]["steady"] for n in names}
    for fmt in ["fp32"] + t["formats"]:
        def x(kind):
            v = g[kind]["ms"][fmt]
            return f"{v:.1f}" + ("" if fmt == "fp32" else f" ({g[kind]['ms']['fp32'] / v:.2f}x)")
        cells = [x("audio"), x("text"), f"{g['audio']['cosine_min'][fmt]:.5f}", f"{g['text']['cosine_min'][fmt]:.5f}"]
        agree, steady = [], []
        for n in names:
            if fmt == "fp32":
                agree.append("reference"); steady.append(f"{fp32_steady[n]:.2f}")
                continue
            r = t["labels"][n][fmt]
            if "refused" in r:
                agree.append(r["refused"]); steady.append("-")
            else:
                agree.append(f"{r['agree']:.3f} ({r['same']}/{sets[n]['clips']})")
                steady.append(f"{r['steady']:.2f} ({r['steady'] / fp32_steady[n]:.2f}x)")
        mark = " (shipped)" if fmt == t["shipped"] else ""
        out.append(f"| {fmt}{mark} | " + " | ".join(cells + agree + steady) + " |")
    for n in names:
        for fmt in t["formats"]:
            r = t["labels"][n][fmt]
            for i, x32, x8, m in r.get("flips", []):
                out.append(f"flip, {fmt}, {n}: {i[:8]} {x32} -> {x8} (fp32 margin {m:.4f})")
    return out


# ---- reporting --------------------------------------------------------------------------------------------------
def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def targets_lines(sets: dict, peak: dict, isolated: dict | None, formats: dict | None = None,
                  vnni: bool | None = None) -> list[str]:
    """Issues 14 and 24's targets per set: value, target, met or missed and by how much. Issue 24's int8 speed
    target depends on the CPU: >= 5x torch where VNNI/AMX exist, else >= 1.2x fp32 and no slower than uint8
    weights (the format shipped before)."""
    from bst_rt.runtime.int8_format import u8s8_saturates

    vnni = (u8s8_saturates() is False) if vnni is None else vnni
    lines = [f"this CPU {'has' if vnni else 'lacks'} VNNI/AMX: int8 speed target "
             f"{'>= 5x torch' if vnni else f'>= {TARGET_INT8_OVER_FP32:.1f}x fp32 and no slower than uint8 weights'}"]
    for name, s in sets.items():
        fp32, int8 = s["rows"]["bst-rt fp32"], s["rows"]["bst-rt int8"]
        lines.append(f"{name}:")
        if not vnni:
            over = int8["steady"] / fp32["steady"]
            lines.append(f"  int8 steady x fp32 = {over:.2f}x (target {TARGET_INT8_OVER_FP32:.1f}x): "
                         f"{_met(over >= TARGET_INT8_OVER_FP32)} by {abs(over - TARGET_INT8_OVER_FP32):.2f}x")
        if formats:
            shipped = formats["labels"][name].get(formats["shipped"], {})
            legacy = formats["labels"][name].get(LEGACY_FORMAT, {})
            if "agree" in shipped:
                lines.append(f"  int8 ({formats['shipped']}) labels = fp32: {shipped['agree']:.3f} (target >= "
                             f"{TARGET_INT8_AGREE:.2f}): {_met(shipped['agree'] >= TARGET_INT8_AGREE)} by "
                             f"{abs(shipped['agree'] - TARGET_INT8_AGREE):.3f}")
            if "steady" in shipped and "steady" in legacy and formats["shipped"] != LEGACY_FORMAT:
                ratio = shipped["steady"] / legacy["steady"]
                lines.append(f"  int8 ({formats['shipped']}) steady x uint8 weights = {ratio:.2f}x (target >= 1.00x, "
                             f"one run each, noisy): {_met(ratio >= 1.0)} by {abs(ratio - 1.0):.2f}x")
        for eng, r, target in (("fp32", fp32, TARGET_FP32_X), ("int8", int8, TARGET_INT8_X)):
            gap = r["steady_x"] - target
            lines.append(f"  {eng} steady x torch = {r['steady_x']:.2f}x (target {target:.0f}x): "
                         f"{_met(gap >= 0)} by {abs(gap):.2f}x")
        lines.append(f"  fp32 labels identical to torch: {'yes' if fp32['same'] == s['clips'] else 'no'} "
                     f"({fp32['same']}/{s['clips']})")
        lines.append(f"  int8 label agreement = {int8['agree']:.3f} (target >= {TARGET_INT8_AGREE:.2f}): "
                     f"{_met(int8['agree'] >= TARGET_INT8_AGREE)} by {abs(int8['agree'] - TARGET_INT8_AGREE):.3f}")
        if "audio_graph_gflops" in fp32:
            share = fp32["audio_graph_gflops"] / peak["gflops"]
            lines.append(f"  fp32 audio graph in the run: {fp32['audio_graph_ms_per_clip']:.1f} ms a clip = "
                         f"{fp32['audio_graph_gflops']:.0f} GFLOPS = {share:.0%} of peak (target >= 50 %): "
                         f"{_met(share >= TARGET_PEAK_SHARE)} by {abs(share - TARGET_PEAK_SHARE) * 100:.0f} points")
        if isolated and "stages" in fp32:
            lines.append("  " + ceiling_line(s, isolated))
            share = fp32["steady_x"] / bound_x(s, isolated)
            lines.append(f"  fp32 steady = {share:.0%} of that bound (target >= {TARGET_BOUND_SHARE:.0%}): "
                         f"{_met(share >= TARGET_BOUND_SHARE)} by {abs(share - TARGET_BOUND_SHARE) * 100:.0f} points")
    if isolated:
        share = isolated["gflops"] / peak["gflops"]
        lines.append(f"fp32 audio graph alone (best of {isolated['runs']} runs x {len(isolated.get('passes_gflops', [1]))} "
                     f"passes, batch {isolated['batch']}, random mels, "
                     f"fusion path): {isolated['ms_per_clip']:.1f} ms a clip = {isolated['gflops']:.0f} GFLOPS = "
                     f"{share:.0%} of peak (target >= 50 %): {_met(share >= TARGET_PEAK_SHARE)} by "
                     f"{abs(share - TARGET_PEAK_SHARE) * 100:.0f} points")
    lines.append(f"ORT fp32 MatMul peak: {peak['gflops']:.0f} GFLOPS (shape {peak['shape']}, best of >= {peak['repeats']} "
                 f"runs after warm-up, over {len(peak['per_shape'])} shapes; passes before/after the sets: "
                 f"{', '.join(f'{g:.0f}' for g in peak.get('passes_gflops', [peak['gflops']]))} GFLOPS)")
    return lines


def bound_x(s: dict, isolated: dict) -> float:
    """The fp32 ratio to torch `ceiling_line` describes."""
    fp32, ref = s["rows"]["bst-rt fp32"], s["rows"]["torch chain"]
    graphs = (fp32["audio_clips"] * isolated["ms_per_clip"] / 1e3 + fp32["stages"].get("text graph", 0.0)) / s["clips"]
    return (1.0 / ref["steady"]) / graphs


def ceiling_line(s: dict, isolated: dict) -> str:
    """What fp32 could reach if it spent nothing outside its two encoder graphs and ran the audio graph at its
    isolated speed: (audio clips x isolated ms + the run's text-graph seconds) per clip, against the torch chain's
    steady seconds per clip. The same CLAP FLOPs are computed on both sides, so this bounds the fp32 ratio."""
    fp32, ref = s["rows"]["bst-rt fp32"], s["rows"]["torch chain"]
    graphs = (fp32["audio_clips"] * isolated["ms_per_clip"] / 1e3 + fp32["stages"].get("text graph", 0.0)) / s["clips"]
    torch_per_clip = 1.0 / ref["steady"]
    return (f"fp32 bound: encoder graphs alone {1e3 * graphs:.0f} ms a clip vs torch steady {1e3 * torch_per_clip:.0f} "
            f"ms a clip -> at most {torch_per_clip / graphs:.2f}x torch with everything else free")


def markdown_table(s: dict) -> list[str]:
    out = ["| engine | clips/s whole run | steady clips/s | first prediction | peak RSS | labels = torch | load at end |",
           "|---|---|---|---|---|---|---|"]
    for name, r in s["rows"].items():
        ref = name == "torch chain"
        x = (lambda v: "") if ref else (lambda v: f" ({v:.2f}x)")
        agree = "reference" if ref else f"{r['agree']:.3f} ({r['same']}/{s['clips']})"
        out.append(f"| {name} | {r['rate']:.2f}{x(r['rate_x'])} | {r['steady']:.2f}{x(r['steady_x'])} | "
                   f"{r['first_s']:.1f} s | {r['rss_mb']:.0f} MB{x(r['rss_x'])} | {agree} | {r.get('load_end', 0):.1f} |")
    return out


def console_table(s: dict) -> list[str]:
    out = [f"{'engine':<14}{'clips/s':>9}{'x torch':>9}{'steady/s':>10}{'x torch':>9}{'first (s)':>11}"
           f"{'peak RSS MB':>13}{'x torch':>9}{'labels = torch':>16}{'load':>6}"]
    for name, r in s["rows"].items():
        out.append(f"{name:<14}{r['rate']:>9.2f}{r['rate_x']:>8.2f}x{r['steady']:>10.2f}{r['steady_x']:>8.2f}x"
                   f"{r['first_s']:>11.1f}{r['rss_mb']:>13.0f}{r['rss_x']:>8.2f}x{r['agree']:>16.3f}"
                   f"{r.get('load_end', 0):>6.1f}")
    return out


def stage_lines(s: dict) -> list[str]:
    """Per-stage wall seconds of the bst-rt runs (the run record's `stage_seconds`; the front end runs in a worker
    thread, overlapped with the graphs, so stages can add up to more than the run), and the front end split into
    decode / resample / mel by a separate one-thread pass over the same files."""
    rt = {k: r for k, r in s["rows"].items() if "stages" in r}
    names = sorted({n for r in rt.values() for n in r["stages"]})
    out = [f"per-stage seconds; 'other' = run time not in a stage", f"{'stage':<34}" + "".join(f"{k:>14}" for k in rt)]
    out += [f"{n:<34}" + "".join(f"{r['stages'].get(n, 0.0):>14.2f}" for r in rt.values()) for n in names]
    out.append(f"{'other':<34}" + "".join(f"{r['total_s'] - sum(r['stages'].values()):>14.2f}" for r in rt.values()))
    out.append(f"{'whole run':<34}" + "".join(f"{r['total_s']:>14.2f}" for r in rt.values()))
    torch_stages = s["rows"]["torch chain"].get("torch_stages")
    if torch_stages:
        out.append("torch chain, same run: " + ", ".join(f"{k} {v:.2f} s" for k, v in torch_stages.items()))
    out.append("front end alone, one thread: " + ", ".join(f"{k} {v:.2f} s" for k, v in s["front_end_split_s"].items()))
    if s.get("laion_gflop_longest_clip"):
        out.append(f"laion-clap file pipeline, longest clip of the set: {s['laion_gflop_longest_clip']:.1f} GFLOP "
                   "(its own mel included; the audio graph's count is printed once below)")
    return out


def readme_block(*, machine: str, date: str, command: str, sets: dict, targets: list[str], extra: list[str],
                 int8_table: list[str] = ()) -> str:
    """The README's measured block: machine (CPU flags included), date, command, one table per set with its
    per-stage seconds (what is left to gain), the int8 format table, the targets."""
    out = [f"Machine: {machine}. Measured {date} by one run of:", "", "```bash", command, "```", ""]
    for name, s in sets.items():
        out += [f"**{name}** ({s['clips']} clips)", ""] + markdown_table(s) + ["", "```"] + stage_lines(s) + ["```", ""]
    if int8_table:
        table = [line for line in int8_table if line.startswith("|")]
        flips = [line for line in int8_table if not line.startswith("|")]
        out += ["**int8 weight formats** (one thread, batch 1; cosines on the sets' clips and texts; labels: system 1 "
                "vs the fp32 runtime)", ""] + table + ([""] + ["```"] + flips + ["```"] if flips else []) + [""]
    out += ["Targets of issues 14 and 24 (steady state, same clips, same run):", "", "```"] + targets + extra + ["```"]
    return "\n".join(out)


def replace_readme_block(text: str, block: str) -> str:
    """`text` with everything between the bench markers replaced by `block`; the rest kept byte for byte."""
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"README needs exactly one {README_START} and one {README_END}")
    start, end = text.index(README_START), text.index(README_END)
    if end < start:
        raise ValueError(f"README: {README_END} comes before {README_START}")
    return f"{text[:start]}{README_START}\n{block.strip()}\n{README_END}{text[end + len(README_END):]}"


def write_readme(path: Path, block: str) -> None:
    from bst_rt.runtime.atomic import atomic_write_text

    atomic_write_text(path, replace_readme_block(path.read_text(encoding="utf-8"), block))


def _without_labels(s: dict) -> dict:
    return {**s, "rows": {k: {x: v for x, v in r.items() if x != "labels"} for k, r in s["rows"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench",
                    help="where the bench builds its inputs (resumable: a rerun skips what exists)")
    ap.add_argument("--bundle", type=Path, default=None, help="your own bundle (with --run) instead of the demo's")
    ap.add_argument("--run", type=Path, default=None, help="run folder the --bundle was exported from")
    ap.add_argument("--eval", type=Path, default=None, help="evaluation package (default: the demo's synthetic one)")
    ap.add_argument("--real-audio", type=Path, default=default_real_audio(),
                    help="folder of real .ogg recordings (+ .txt) measured as a second set")
    ap.add_argument("--synthetic-only", action="store_true", help="skip the real recordings")
    ap.add_argument("--clap-ckpt", default="", help="checkpoint of the bundle (default: random weights, --seed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--peak-repeats", type=int, default=10, help="timed runs per MatMul shape (after warm-up)")
    ap.add_argument("--peak-seconds", type=float, default=2.0, help="and at least this long per MatMul shape")
    ap.add_argument("--graph-runs", type=int, default=10, help="timed runs of the isolated audio graph")
    ap.add_argument("--format-rounds", type=int, default=20,
                    help="interleaved timed calls per graph and int8 format in the int8 format table")
    ap.add_argument("--skip-int8-formats", action="store_true", help="no int8 format table")
    ap.add_argument("--rt-venv", type=Path, default=None, help="existing runtime-only venv to measure")
    ap.add_argument("--torch-venv", type=Path, default=ROOT / ".venv")
    ap.add_argument("--skip-venv-size", action="store_true", help="do not build a runtime-only venv to size it")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--readme", action="store_true", help="rewrite the README's bench:predict block with the results")
    a = ap.parse_args()
    if (a.bundle is None) != (a.run is None):
        ap.error("give --bundle and --run together (or neither: the bench builds the demo's)")
    command = shlex.join(["python", "bench/predict.py", *sys.argv[1:]])
    load_start = os.getloadavg()[0]
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    if a.bundle is None:
        bundle, run, synthetic = build_demo_inputs(a.work.resolve(), a.threads)
    else:
        bundle, run, synthetic = a.bundle, a.run, None
    eval_sets: dict[str, Path] = {}
    if a.eval is not None or synthetic is not None:
        name = "synthetic eval package" if a.eval is None else f"eval package {a.eval}"
        eval_sets[name] = a.eval or synthetic
    if a.synthetic_only:
        print("real recordings: skipped (--synthetic-only)")
    elif a.real_audio is None or not a.real_audio.is_dir():
        print(f"real recordings: skipped (no folder {a.real_audio or 'shared/audio/librosa-data'}; pass --real-audio)")
    else:
        real = build_real_eval(a.real_audio, a.work.resolve() / "real-eval")
        eval_sets[f"real recordings ({a.real_audio.name}, full length)"] = real
    if not eval_sets:
        ap.error("nothing to measure: give --eval or real recordings")

    tmp = Path(tempfile.mkdtemp())
    flops = _child(_GRAPH_FLOPS_CHILD, [a.threads])  # torch FLOP count of the exported module, one clip
    gflop = flops["fusion"]
    hardware = [_hardware(a, bundle, gflop)]  # before and after the sets: a passing load cannot lower the peak
    sets = {}
    for name, eval_dir in eval_sets.items():
        print(f"measuring {name}: {eval_dir}", flush=True)
        sets[name] = measure_set(eval_dir, a, bundle, run, tmp, gflop)
    hardware.append(_hardware(a, bundle, gflop))
    formats = None if a.skip_int8_formats else int8_formats(a, bundle, sets, eval_sets, tmp)
    peak = max((h[0] for h in hardware), key=lambda p: p["gflops"])
    isolated = max((h[1] for h in hardware), key=lambda i: i["gflops"])
    peak["passes_gflops"] = [round(h[0]["gflops"], 1) for h in hardware]
    isolated["passes_gflops"] = [round(h[1]["gflops"], 1) for h in hardware]
    sizes = {}
    if not a.skip_venv_size:
        try:
            rt_venv = _runtime_venv(a.rt_venv)
            sizes = {"runtime venv": _venv_mb(rt_venv), "torch venv": _venv_mb(a.torch_venv)}
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"installed size: skipped (runtime-only venv not built: {exc})")

    machine = f"{_cpu_name()} ({_cpu_flags_text()}), onnxruntime {_ort_version()}, {os.cpu_count()} cores, " \
              f"1-min load average {load_start:.1f} at the start, " \
              f"{os.getloadavg()[0]:.1f} at the end (each engine's 'load' column: as it ended, itself included); " \
              f"threads {a.threads}; batch {a.batch_size}"
    print(f"\nmachine: {machine}\ncommand: {command}")
    for name, s in sets.items():
        print(f"\n== {name}: {s['clips']} clips from {s['eval_dir']}")
        print("\n".join(console_table(s) + stage_lines(s)))
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in peak["per_shape"].items())
    print(f"\naudio graph (the exported module, torch FLOP count): {flops['fusion']:.2f} GFLOP a clip on the fusion "
          f"path, {flops['short']:.2f} for a clip of 10 s or less; the GFLOPS below use the fusion count")
    print(f"ORT fp32 MatMul GFLOPS per shape (best of >= {peak['repeats']} runs and {a.peak_seconds:g} s after "
          f"warm-up): {peaks}")
    extra = []
    if sizes:
        extra.append(f"installed size: runtime-only venv {sizes['runtime venv']:.0f} MB, torch venv "
                     f"{sizes['torch venv']:.0f} MB (ratio {sizes['runtime venv'] / sizes['torch venv']:.3f})")
    format_lines = int8_table_lines(formats, sets) if formats else []
    if format_lines:
        print(f"\nint8 weight formats (one thread, batch 1, best of {a.format_rounds} interleaved calls; cosines on "
              "the sets' own clips and texts; labels: system 1, whole runtime vs its fp32 run):\n"
              + "\n".join(format_lines))
    targets = targets_lines(sets, peak, isolated, formats)
    print("\ntargets (issues 14 and 24):\n" + "\n".join(targets + extra))
    if a.json:
        a.json.write_text(json.dumps({"machine": machine, "date": date, "command": command,
                                      "sets": {k: _without_labels(s) for k, s in sets.items()},
                                      "matmul_peak": peak, "audio_graph_isolated": isolated, "sizes_mb": sizes,
                                      "audio_graph_gflop_per_clip": flops,
                                      "int8_formats": formats, "targets": targets}, indent=2))
    if a.readme:
        write_readme(ROOT / "README.md", readme_block(machine=machine, date=date, command=command, sets=sets,
                                                     targets=targets, extra=extra, int8_table=format_lines))
        print(f"README.md: {README_START} block rewritten")


if __name__ == "__main__":
    main()
