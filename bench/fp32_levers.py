"""Two of issue 24's fp32 levers, each beside today's way in one run, on the same inputs and the same graphs:

- **streams**: one session with two intra-op threads over the batches in turn (today) against ONE session with
  one intra-op thread run by two Python threads over alternate batches (onnxruntime's `run` is thread-safe and
  releases the GIL, so this is two single-thread streams without a second copy of the weights);
- **grouping**: the texts of the package as the run encodes them (per batch of clips, each distinct string padded
  to its 8-token bucket, one call per bucket: `encoders.token_bucket_calls`) against the lever: texts grouped by
  their exact token count over the whole package (no padding at all: fewer tokens and fewer calls), with the check
  that every text's embedding in those groups equals that text run alone at its exact length (bit for bit).

    .venv/bin/python bench/fp32_levers.py [--bundle artifacts/demo] [--eval artifacts/demo-work/corpus/eval]
        [--batch-size 4] [--rounds 3]

Prints wall seconds and process CPU seconds of each side (best of --rounds), their ratio, and the machine (CPU model
and flags, onnxruntime version, load average). Never a test: the numbers are the machine's.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bst_rt.runtime.audio import file_to_mel_fusion  # noqa: E402
from bst_rt.runtime.datasets import read_eval_package  # noqa: E402
from bst_rt.runtime.encoders import run_audio_graph, run_text_graph, token_bucket_calls  # noqa: E402
from bst_rt.runtime.session import make_session  # noqa: E402
from bst_rt.runtime.text import mask_class_words  # noqa: E402
from bst_rt.runtime.tokenizer import Tokenizer  # noqa: E402

def machine() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name:")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags:")), [])
    simd = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags)
    import onnxruntime as ort

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, flags: {simd}; onnxruntime {ort.__version__}; load {load}"


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Best wall and process-CPU seconds over `rounds` (after one warm-up call)."""
    fn()
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(rounds):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def two_streams(jobs: Sequence[Callable[[], object]]) -> None:
    """Run `jobs` in two threads over alternate items (what a two-stream LocalSource would do)."""
    def worker(k: int) -> None:
        for job in jobs[k::2]:
            job()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def line(name: str, a: tuple[float, float], b: tuple[float, float], a_name: str, b_name: str) -> str:
    return (f"{name:<22} {a_name}: wall {a[0]:6.2f} s cpu {a[1]:6.2f} s | {b_name}: wall {b[0]:6.2f} s "
            f"cpu {b[1]:6.2f} s | wall ratio {a[0] / b[0]:.3f}x, cpu ratio {a[1] / b[1]:.3f}x")


def bench_streams(bundle: Path, mels: list, batch: int, token_rows: list, rounds: int) -> None:
    s2 = make_session(bundle / "clap_audio.onnx", "cpu", 2)
    s1 = make_session(bundle / "clap_audio.onnx", "cpu", 1)
    batches = [(np.stack([m for m, _ in mels[i:i + batch]]), np.array([lg for _, lg in mels[i:i + batch]]))
               for i in range(0, len(mels), batch)]
    one = timed(lambda: [run_audio_graph(s2, m, lg) for m, lg in batches], rounds)
    two = timed(lambda: two_streams([lambda m=m, lg=lg: run_audio_graph(s1, m, lg) for m, lg in batches]), rounds)
    print(line(f"audio ({len(mels)} clips)", one, two, "1 session x 2 threads", "2 streams x 1 thread"))
    del s1, s2
    t2 = make_session(bundle / "clap_text.onnx", "cpu", 2)
    t1 = make_session(bundle / "clap_text.onnx", "cpu", 1)
    one = timed(lambda: [run_text_graph(t2, i, m) for i, m in token_rows], rounds)
    two = timed(lambda: two_streams([lambda i=i, m=m: run_text_graph(t1, i, m) for i, m in token_rows]), rounds)
    print(line(f"text ({len(token_rows)} calls)", one, two, "1 session x 2 threads", "2 streams x 1 thread"))


def per_batch_calls(tok: Tokenizer, texts_by_batch: list[list[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's text calls: per batch of clips, distinct strings grouped by 8-token bucket."""
    return [(i, m) for texts in texts_by_batch
            for _, i, m in token_bucket_calls(tok.token_ids(list(dict.fromkeys(texts))), tok)]


def exact_calls(tok: Tokenizer, texts: list[str]) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[list[int]]]:
    """Distinct strings of the package grouped by exact token count; also the row order (indices into `unique`)."""
    parts = list(token_bucket_calls(tok.token_ids(list(dict.fromkeys(texts))), tok, bucket=1))
    return [(i, m) for _, i, m in parts], [rows for rows, _, _ in parts]


def bench_grouping(bundle: Path, tok: Tokenizer, texts_by_batch: list[list[str]], rounds: int) -> None:
    sess = make_session(bundle / "clap_text.onnx", "cpu", 2)
    today = per_batch_calls(tok, texts_by_batch)
    window = [t for texts in texts_by_batch for t in texts]
    exact, order = exact_calls(tok, window)
    tokens_today = sum(i.size for i, _ in today)
    tokens_exact = sum(i.size for i, _ in exact)
    a = timed(lambda: [run_text_graph(sess, i, m) for i, m in today], rounds)
    b = timed(lambda: [run_text_graph(sess, i, m) for i, m in exact], rounds)
    print(line("text grouping", a, b, f"per batch, 8-token buckets ({len(today)} calls, {tokens_today} tokens)",
               f"package, exact length ({len(exact)} calls, {tokens_exact} tokens)"))
    unique = list(dict.fromkeys(window))
    ids = tok.token_ids(unique)
    worst = 0.0
    for (i, m), part in zip(exact, order):
        grouped = run_text_graph(sess, i, m)
        for r, j in enumerate(part):
            alone = run_text_graph(sess, *tok.pad([ids[j]], len(ids[j])))[0]
            worst = max(worst, float(np.abs(grouped[r] - alone).max()))
    print(f"  exact-length groups vs each text alone at its exact length: max |d| = {worst:.3g} "
          f"over {len(unique)} texts")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "demo")
    ap.add_argument("--eval", type=Path, default=ROOT / "artifacts" / "demo-work" / "corpus" / "eval")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=("streams", "grouping"), default=None)
    a = ap.parse_args()
    print(machine())
    package = read_eval_package(a.eval)
    tok = Tokenizer.from_file(a.bundle / "tokenizer.json")
    clips = package.clips
    texts_by_batch = []
    for s in range(0, len(clips), a.batch_size):
        plain = [c.text for c in clips[s:s + a.batch_size] if c.text]
        texts_by_batch.append(plain + [mask_class_words(t) for t in plain])
    if a.only in (None, "streams"):
        mels = []
        for c in clips:
            try:
                if c.audio_path is not None:
                    mels.append(file_to_mel_fusion(c.audio_path))
            except Exception:  # noqa: BLE001 - the package's hostile entries (they fall back in a run)
                pass
        bench_streams(a.bundle, mels, a.batch_size, per_batch_calls(tok, texts_by_batch), a.rounds)
    if a.only in (None, "grouping"):
        bench_grouping(a.bundle, tok, texts_by_batch, a.rounds)
    print(f"end load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
