"""CLAP encoders side by side: torch eager (laion-clap) vs onnxruntime fp32 vs onnxruntime int8.

Each engine runs in its own subprocess on the same deterministic inputs, so peak RSS is honest (an ORT process
never imports torch). Audio: the encoders get identical `mel_fusion` batches from the numpy front end (its own
cost is a separate row). Text: torch runs laion's `get_text_embedding` (its tokenizer pads to 77 tokens), the
runtime its `tokenizers` encoder padded to the batch's longest text: what each side really does.

    .venv/bin/python bench/encoders.py [--graphs DIR] [--repeats 3] [--threads N]

`--text-last-layer` instead times the exported text graph (last layer for token 0 only, what the pooler reads)
against the same graph with the last layer on every token, side by side in one process, one session each with
the runtime's options and one intra-op thread, at batch 1 and 8 and 16/32/64 tokens (repeats interleaved, so
both see the same neighbours):

    .venv/bin/python bench/encoders.py --text-last-layer [--repeats 15]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TEXTS = [
    "Solo piano. piano classical waltz. A slow waltz in A minor recorded on an upright piano at home.",
    "Dog barking. dog animal bark outdoor. A medium dog barks twice in a backyard, birds in the background.",
    "Rain on roof. rain storm ambience. Heavy rain on a tin roof with distant thunder rolls.",
    "Kick 01. drum kick one-shot 808. A punchy electronic kick drum sample.",
    "City street. urban traffic people. Busy crossing with buses, footsteps and chatter.",
    "Robot voice. speech synthetic vocoder. Text to speech reading numbers with a metallic vocoder.",
    "Door creak. door wood creak house. An old wooden door opens slowly and creaks.",
    "Whoosh riser. sfx transition whoosh. Designed whoosh rising into an impact for trailers.",
]
FULL_TEXT_GRAPH = "clap_text.full_last_layer.onnx"  # bench-only twin of clap_text.onnx
CLIP_SECONDS = [4.0, 10.0, 25.0, 7.5, 12.0, 2.0, 30.0, 9.0]  # mixed: some take the fusion (longer) path


def _waveforms() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for s in CLIP_SECONDS:
        t = np.arange(int(s * 48000)) / 48000
        out.append((0.3 * np.sin(2 * np.pi * (200 + 50 * t) * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32))
    return out


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `fn`. CPU time (all threads) is the honest figure on a shared, loaded
    machine, where wall time mostly measures the neighbours."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(engine: str, graphs: Path, repeats: int, threads: int | None) -> dict:
    from bst_rt.runtime.audio import waveforms_to_mel_fusion

    waves = _waveforms()
    t0 = time.perf_counter()
    mel, longer = waveforms_to_mel_fusion(waves)
    frontend_ms = (time.perf_counter() - t0) * 1000 / len(waves)
    res: dict = {"engine": engine, "frontend_ms_per_clip": frontend_ms}
    if engine == "torch":
        import torch

        from bst_rt.train.clap import load_clap

        if threads:
            torch.set_num_threads(threads)
        model = load_clap(None, random_weights=True, seed=0)

        def audio(b: int):
            data = [{"mel_fusion": torch.from_numpy(m), "longer": torch.tensor([bool(lg)])}
                    for m, lg in zip(mel[:b], longer[:b])]
            with torch.no_grad():
                return model.model.get_audio_embedding(data)

        def text(b: int):
            with torch.no_grad():
                return model.get_text_embedding(TEXTS[:b])
        res["model_mb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    else:
        from bst_rt.runtime.encoders import (AUDIO_GRAPH, AUDIO_INT8, TEXT_GRAPH, TEXT_INT8, TOKENIZER_FILE,
                                          AudioEncoder, TextEncoder)

        a_file, t_file = (AUDIO_GRAPH, TEXT_GRAPH) if engine == "ort-fp32" else (AUDIO_INT8, TEXT_INT8)
        a_enc = AudioEncoder(graphs / a_file, provider="cpu", threads=threads)
        t_enc = TextEncoder(graphs / t_file, graphs / TOKENIZER_FILE, provider="cpu", threads=threads)

        def audio(b: int):
            return a_enc.embed_mel(mel[:b], longer[:b])

        def text(b: int):
            return t_enc.embed(TEXTS[:b])
        res["model_mb"] = ((graphs / a_file).stat().st_size + (graphs / t_file).stat().st_size) / 1e6
        res["audio_file_mb"] = (graphs / a_file).stat().st_size / 1e6
        res["text_file_mb"] = (graphs / t_file).stat().st_size / 1e6
    for b in (1, 8):
        for kind, fn in (("audio", audio), ("text", text)):
            wall, cpu = _time(lambda: fn(b), repeats)
            res[f"{kind}_ms_b{b}"], res[f"{kind}_cpu_ms_b{b}"] = wall * 1000 / b, cpu * 1000 / b
    res["audio_emb"] = np.asarray(audio(8)).tolist()
    res["peak_rss_mb"] = _peak_rss_mb()
    assert ("torch" in sys.modules) == (engine == "torch"), "an ORT worker must not import torch"
    return res


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}; {os.cpu_count()} logical cores; load average at start {load}"


def _table(results: list[dict]) -> str:
    base = results[0]
    rows = [("audio ms/clip, batch 1", "audio_ms_b1"), ("audio ms/clip, batch 8", "audio_ms_b8"),
            ("text ms/text, batch 1", "text_ms_b1"), ("text ms/text, batch 8", "text_ms_b8"),
            ("audio CPU-ms/clip, b1", "audio_cpu_ms_b1"), ("audio CPU-ms/clip, b8", "audio_cpu_ms_b8"),
            ("text CPU-ms/text, b1", "text_cpu_ms_b1"), ("text CPU-ms/text, b8", "text_cpu_ms_b8"),
            ("peak RSS MB", "peak_rss_mb"), ("weights MB (audio+text)", "model_mb")]
    head = f"| {'':26} |" + "".join(f" {r['engine']:>20} |" for r in results)
    lines = [head, "|" + "-" * 28 + "|" + "".join("-" * 22 + "|" for _ in results)]
    for label, key in rows:
        cells = []
        for r in results:
            ratio = "" if r is base or key in ("peak_rss_mb", "model_mb") else f" ({base[key] / r[key]:.2f}x)"
            cells.append(f" {r[key]:>9.1f}{ratio:>10} |")
        lines.append(f"| {label:26} |" + "".join(cells))
    fe = results[1]["frontend_ms_per_clip"]
    lines.append(f"numpy front end (decode excluded), mean ms/clip over {CLIP_SECONDS} s clips: {fe:.1f}")
    for r in results[1:]:
        if "audio_file_mb" in r:
            lines.append(f"{r['engine']}: audio graph {r['audio_file_mb']:.1f} MB, text graph {r['text_file_mb']:.1f} MB")
    a = np.array(results[1]["audio_emb"])
    for r in (results[0], results[2]):
        b = np.array(r["audio_emb"])
        cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        lines.append(f"min cosine ort-fp32 vs {r['engine']} on the benchmark clips: {cos.min():.6f}")
    lines.append("ratios: speed-up over torch eager (higher is faster)")
    return "\n".join(lines)


TEXT_SHAPES = [(b, t) for b in (1, 8) for t in (16, 32, 64)]


def text_last_layer_worker(graphs: Path, repeats: int) -> dict:
    """ms per call of clap_text.onnx (token-0 last layer) and its full-last-layer twin, interleaved, 1 thread."""
    from bst_rt.runtime.encoders import TEXT_GRAPH
    from bst_rt.runtime.session import make_session

    sessions = {"full": make_session(graphs / FULL_TEXT_GRAPH, threads=1), "cls": make_session(graphs / TEXT_GRAPH,
                                                                                           threads=1)}
    rng = np.random.default_rng(0)
    rows = []
    for batch, tokens in TEXT_SHAPES:
        ids = rng.integers(3, 50000, (batch, tokens), dtype=np.int64)
        ids[:, 0], ids[:, -1] = 0, 2
        mask = np.ones_like(ids)
        if batch > 1:  # a padded batch, as the runtime sends: shorter texts end early
            for row, length in enumerate(np.linspace(tokens // 4, tokens, batch).astype(int)):
                ids[row, length - 1], ids[row, length:], mask[row, length:] = 2, 1, 0
        feeds = {"input_ids": ids, "attention_mask": mask}
        outs = {k: s.run(None, feeds)[0] for k, s in sessions.items()}  # warm-up, and the two graphs' agreement
        times: dict[str, list[float]] = {"full": [], "cls": [], "full_cpu": [], "cls_cpu": []}
        for _ in range(repeats):
            for k, s in sessions.items():
                t0, c0 = time.perf_counter(), time.process_time()
                s.run(None, feeds)
                times[k].append((time.perf_counter() - t0) * 1000)
                times[f"{k}_cpu"].append((time.process_time() - c0) * 1000)
        rows.append({"batch": batch, "tokens": tokens, **{f"{k}_ms": statistics.median(v) for k, v in times.items()},
                     "max_abs_diff": float(np.abs(outs["full"] - outs["cls"]).max())})
    assert "torch" not in sys.modules, "an ORT worker must not import torch"
    return {"rows": rows}


def _text_last_layer(repeats: int) -> None:
    from bst_rt.runtime.int8_format import describe_cpu

    print(f"machine: {_machine()}")
    print(f"CPU flags: {describe_cpu()}")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from bst_rt.train.clap import load_clap; "
                        "from bst_rt.export.clap import export_text_graph; from bst_rt.runtime.encoders import TEXT_GRAPH; "
                        "m = load_clap(None, random_weights=True, seed=0); d = Path(sys.argv[1]); "
                        "export_text_graph(m, d / TEXT_GRAPH); export_text_graph(m, d / sys.argv[2], full_last_layer=True)",
                        tmp, FULL_TEXT_GRAPH], check=True, stderr=subprocess.DEVNULL)
        out = subprocess.run([sys.executable, __file__, "--worker", "text-last-layer", "--graphs", tmp,
                              "--repeats", str(repeats)], check=True, capture_output=True, text=True)
    rows = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    print(f"CLAP text graph (RoBERTa, seeded random weights), onnxruntime fp32, 1 intra-op thread, runtime session "
          f"options; median ms (wall and CPU) per call of {repeats} interleaved runs after a warm-up; "
          f"load average at end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| batch | tokens | full last layer ms | token-0 last layer ms | full / token-0 | CPU-ms full | CPU-ms token-0 "
          "| full / token-0 (CPU) | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['tokens']} | {r['full_ms']:.2f} | {r['cls_ms']:.2f} | "
              f"{r['full_ms'] / r['cls_ms']:.3f} | {r['full_cpu_ms']:.2f} | {r['cls_cpu_ms']:.2f} | "
              f"{r['full_cpu_ms'] / r['cls_cpu_ms']:.3f} | {r['max_abs_diff']:.1e} |")
    for what, key in (("wall", ""), ("CPU", "_cpu")):
        full, cls = sum(r[f"full{key}_ms"] for r in rows), sum(r[f"cls{key}_ms"] for r in rows)
        print(f"all shapes, {what}: {full:.1f} ms vs {cls:.1f} ms, token-0 saves {100 * (1 - cls / full):.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=Path, help="folder with exported CLAP graphs (default: export them now)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads for every engine (default: all)")
    ap.add_argument("--text-last-layer", action="store_true",
                    help="time the text graph's token-0 last layer against the full last layer (1 thread)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "text-last-layer":
        print(json.dumps(text_last_layer_worker(args.graphs, args.repeats)))
        return
    if args.text_last_layer:
        _text_last_layer(args.repeats)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.graphs, args.repeats, args.threads)))
        return
    machine = _machine()
    with tempfile.TemporaryDirectory() as tmp:
        graphs = args.graphs
        if graphs is None:
            graphs = Path(tmp)
            subprocess.run([sys.executable, "-c", "import sys; from bst_rt.train.clap import load_clap; "
                            "from bst_rt.export.clap import export_clap; "
                            "export_clap(load_clap(None, random_weights=True, seed=0), sys.argv[1])", str(graphs)],
                           check=True, stderr=subprocess.DEVNULL)
        results = []
        for engine in ("torch", "ort-fp32", "ort-int8"):
            out = subprocess.run([sys.executable, __file__, "--worker", engine, "--graphs", str(graphs),
                                  "--repeats", str(args.repeats)] + (["--threads", str(args.threads)] if args.threads else []),
                                 check=True, capture_output=True, text=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"machine: {machine}")
    print("CLAP fusion (HTSAT-tiny + RoBERTa), seeded random weights; median of "
          f"{args.repeats} runs after a warm-up; each engine in its own process; "
          f"threads: {args.threads or 'default (all cores)'}")
    print(_table(results))


if __name__ == "__main__":
    main()
