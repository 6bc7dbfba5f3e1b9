"""The Node.js client vs `bst-rt predict` side by side on one real evaluation package: clips/s, peak RSS, agreement.

    .venv/bin/python bench/portable_node.py [--bundle DIR] [--real-audio DIR | --eval-dir EVAL_DIR] [--system 1] [--stages]

The bundle is the one `bst-rt predict` would use (`--bundle`, else $BST_BUNDLE, else the one `bst-train demo`
recorded, else ./artifacts/demo: `bst_rt.runtime.bundle.resolve_bundle_dir`); with none, run `bst-train demo` first.
The package is, by default, the shared real recordings (/work/shared/audio/librosa-data, any format libsndfile
reads, at their own rates) written as 44.1 kHz 16-bit WAV, the format the task ships, so both clients decode and
resample it themselves; `--eval-dir` takes a package as it is. Each client runs in its own process with one ONNX
thread, one after the other. "wall" and "CPU s" (user + sys: the fairer figure on a loaded machine) include
start-up (bundle hash checks, session creation); "after load" is each client's own count from its first clip
(`OUT.run.json` elapsed minus `bundle check + sessions` for Python, the "in N s" line for Node). The machine
(lscpu model and flags, 1-min load before and after) heads the output. `--stages` then times the audio stages alone
on the same files: the Node client's resample / frontend / audio-encoder graphs, the same graphs in Python's
onnxruntime, and `bst-rt predict`'s own numpy resampler and front end.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_CLIENT = ROOT / "clients" / "node" / "predict.mjs"
REAL_AUDIO = Path("/work/shared/audio/librosa-data")


def _timed(cmd: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds (user + sys), peak RSS of the child in MB, its stderr) via wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{Path(cmd[1]).name if cmd[0] == 'node' else 'bst-rt predict'} failed: {err.strip()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, err


def _rows(path: Path) -> dict[str, tuple[str, float]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["id"]: (r["predicted_bst_second_level_class"], float(r["prediction_score"])) for r in csv.DictReader(fh)}


def _real_package(audio_dir: Path, root: Path) -> Path:
    """The recordings of `audio_dir` as a 44.1 kHz, 16-bit WAV evaluation package (metadata: the file stem)."""
    import numpy as np
    import soundfile as sf
    import soxr

    (root / "audio").mkdir(parents=True)
    rows = []
    for k, path in enumerate(sorted(p for p in audio_dir.iterdir() if p.suffix.lower() in (".ogg", ".wav", ".flac"))):
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wave = soxr.resample(data, rate, 44100, quality="HQ")
        sf.write(root / "audio" / f"real-{k:02d}.wav", np.clip(wave, -1, 1), 44100, subtype="PCM_16")
        rows.append((f"real-{k:02d}", path.stem.replace("_", " "), "recording", ""))
    if not rows:
        sys.exit(f"{audio_dir}: no .ogg/.wav/.flac recordings")
    with open(root / "eval_metadata.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("anonymous_id", "title", "tags", "description"))
        writer.writerows(rows)
    return root


def _audio_seconds(eval_dir: Path) -> tuple[float, str]:
    """Total audio seconds of the package and its formats / rates, as libsndfile reports them."""
    import soundfile as sf

    seconds, kinds = 0.0, set()
    for path in sorted((eval_dir / "audio").iterdir()):
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError):
            continue
        seconds += info.frames / info.samplerate
        kinds.add(f"{info.format} {info.subtype} {info.samplerate / 1000:g} kHz")
    return seconds, ", ".join(sorted(kinds))


def _machine() -> list[str]:
    """lscpu's model name and flags, the CPU count and the 1-min load average."""
    model, flags = "unknown CPU", "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
        flags = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Flags")), flags)
    except (OSError, subprocess.SubprocessError):
        pass
    return [f"machine: {model}, {os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.2f} at start", f"flags: {flags}"]


def _node_after_load(stderr: str) -> float:
    found = re.findall(r"predictions \(system \S+\) written to .* in ([0-9.]+) s", stderr)
    if not found:
        sys.exit(f"node client: no timing line in its output: {stderr.strip()[-500:]}")
    return float(found[-1])


def _python_after_load(run_json: Path) -> float:
    record = json.loads(run_json.read_text(encoding="utf-8"))
    return float(record["elapsed_s"]) - float(record["stage_seconds"].get("bundle check + sessions", 0.0))


#: Node: the audio graphs one by one on every file of the package (decode.mjs, one thread), seconds per graph
_NODE_STAGES = """
import fs from "node:fs";
import path from "node:path";
import ort from "onnxruntime-node";
import { decodeAudio } from "./decode.mjs";
const [bundle, audioDir] = process.argv.slice(2);
const opts = { executionProviders: ["cpu"], intraOpNumThreads: 1, interOpNumThreads: 1 };
const manifest = JSON.parse(fs.readFileSync(path.join(bundle, "manifest.json"), "utf8"));
const open = (name) => ort.InferenceSession.create(path.join(bundle, manifest.graphs[name].file), opts);
const [rs, fe, ae] = await Promise.all(["resample", "frontend", "audio_encoder"].map(open));
const t = { resample: 0, frontend: 0, audio_encoder: 0 };
const i64 = (v) => new ort.Tensor("int64", BigInt64Array.from([BigInt(v)]), []);
for (const f of fs.readdirSync(audioDir).sort()) {
  let got;
  try { got = await decodeAudio(new Uint8Array(fs.readFileSync(path.join(audioDir, f))), f); } catch { continue; }
  let t0 = performance.now();
  const w = (await rs.run({ waveform: new ort.Tensor("float32", got.wave, [got.wave.length]), sample_rate: i64(got.sampleRate) })).waveform_48k;
  t.resample += performance.now() - t0; t0 = performance.now();
  const m = await fe.run({ waveform: w, length: i64(w.dims[0]) });
  t.frontend += performance.now() - t0; t0 = performance.now();
  await ae.run({ mel_fusion: m.mel_fusion, longer: new ort.Tensor("bool", Uint8Array.from([m.longer.data[0] ? 1 : 0]), [1]) });
  t.audio_encoder += performance.now() - t0;
}
process.stdout.write(JSON.stringify(Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v / 1e3]))));
"""


def _stages(bundle, bundle_dir: Path, eval_dir: Path) -> dict[str, dict[str, float]]:
    """Seconds per audio stage over the package, one thread: the Node client's graphs, the same graphs in Python's
    onnxruntime, and the Python runtime's own numpy resampler + front end."""
    import numpy as np
    import soundfile as sf

    from bst_rt.runtime import audio as audio_module
    from bst_rt.runtime.session import make_session

    script = NODE_CLIENT.parent / f".bench-stages-{os.getpid()}.mjs"  # beside decode.mjs, for its node_modules
    script.write_text(_NODE_STAGES, encoding="utf-8")
    try:
        out = subprocess.run(["node", str(script), str(bundle_dir), str(eval_dir / "audio")], capture_output=True,
                             text=True, timeout=1800)
    finally:
        script.unlink(missing_ok=True)
    if out.returncode != 0:
        sys.exit(f"node stage timing failed: {out.stderr.strip()[-1000:]}")
    graph = {n: make_session(bundle_dir / bundle.manifest.graphs[n].file, provider="cpu", threads=1)
             for n in ("resample", "frontend", "audio_encoder")}
    py = {"numpy resample + front end": 0.0, "resample": 0.0, "frontend": 0.0, "audio_encoder": 0.0}
    for path in sorted((eval_dir / "audio").iterdir()):
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError):
            continue
        x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        t0 = time.perf_counter()
        mel, longer = audio_module.samples_to_mel_fusion(x, rate)
        t1 = time.perf_counter()
        w = graph["resample"].run(None, {"waveform": x, "sample_rate": np.array(rate, np.int64)})[0]
        t2 = time.perf_counter()
        graph["frontend"].run(None, {"waveform": w, "length": np.array(w.shape[0], np.int64)})
        t3 = time.perf_counter()
        graph["audio_encoder"].run(None, {"mel_fusion": mel[None], "longer": np.array([longer])})
        t4 = time.perf_counter()
        for key, dt in zip(py, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            py[key] += dt
    return {"node": json.loads(out.stdout), "python": py}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="bundle folder (default: the one `bst-rt predict` uses)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--real-audio", type=Path, default=REAL_AUDIO, help="recordings to write as a 44.1 kHz WAV package")
    src.add_argument("--eval-dir", type=Path, help="an evaluation package, used as it is")
    ap.add_argument("--system", default="1")
    ap.add_argument("--stages", action="store_true", help="also time the audio stages alone, in Node and in Python")
    args = ap.parse_args()

    from bst_rt.runtime.bundle import load_bundle, resolve_bundle_dir
    from bst_rt.runtime.errors import BstError

    try:
        bundle_dir = resolve_bundle_dir(args.bundle)
        bundle = load_bundle(bundle_dir, verify=False)
    except BstError as err:
        sys.exit(f"error: {err}")
    header = _machine()
    with tempfile.TemporaryDirectory() as tmp:
        eval_dir = args.eval_dir or _real_package(args.real_audio, Path(tmp) / "real44k")
        seconds, kinds = _audio_seconds(eval_dir)
        py_csv, node_csv = Path(tmp) / "py.csv", Path(tmp) / "node.csv"
        py_wall, py_cpu, py_rss, _ = _timed([sys.executable, "-m", "bst_rt.runtime", "predict", str(eval_dir), "--bundle",
                                     str(bundle_dir), "-o", str(py_csv), "--system", args.system, "--threads", "1",
                                     "--provider", "cpu"])
        py_run = _python_after_load(py_csv.with_suffix(".run.json"))
        node_wall, node_cpu, node_rss, node_err = _timed(["node", str(NODE_CLIENT), str(bundle_dir), str(eval_dir), str(node_csv),
                                                "--system", args.system])
        node_run = _node_after_load(node_err)
        a, b = _rows(py_csv), _rows(node_csv)
        stages = _stages(bundle, bundle_dir, Path(eval_dir)) if args.stages else None
    n = len(a)
    same = sum(a[k][0] == b.get(k, ("",))[0] for k in a)
    err = max(abs(a[k][1] - b[k][1]) for k in a if k in b)
    print(*header, sep="\n")
    print(f"package: {eval_dir if args.eval_dir else f'{args.real_audio} as 44.1 kHz 16-bit WAV'}: {n} clips, "
          f"{seconds:.0f} s of audio ({kinds})")
    print(f"bundle: {bundle.manifest.bundle_id} ({bundle_dir}); system {args.system}; one ONNX thread each, CPU")
    print(f"{'client':<16}{'wall s':>8}{'clips/s':>9}{'after load s':>14}{'clips/s':>9}{'CPU s':>8}{'peak RSS MB':>13}")
    for name, wall, run, cpu, rss in (("bst-rt predict", py_wall, py_run, py_cpu, py_rss),
                                      ("node client", node_wall, node_run, node_cpu, node_rss)):
        print(f"{name:<16}{wall:>8.1f}{n / wall:>9.3f}{run:>14.1f}{n / run:>9.3f}{cpu:>8.1f}{rss:>13.0f}")
    print(f"node / python: clips/s x{py_wall / node_wall:.2f} (wall), x{py_run / node_run:.2f} (after load), "
          f"CPU time x{node_cpu / py_cpu:.2f}; "
          f"RSS x{node_rss / py_rss:.2f}; labels equal {same}/{n}, score max abs diff {err:.2g}; "
          f"1-min load {os.getloadavg()[0]:.2f} at end")
    if stages:
        node, py = stages["node"], stages["python"]
        print("audio stages over the package, one thread, s: "
              f"node graphs resample {node['resample']:.1f} + frontend {node['frontend']:.1f}, audio encoder "
              f"{node['audio_encoder']:.1f}; python's onnxruntime, same graphs: resample {py['resample']:.1f} + "
              f"frontend {py['frontend']:.1f}, audio encoder {py['audio_encoder']:.1f}; bst-rt predict's numpy "
              f"resampler + front end {py['numpy resample + front end']:.1f}")


if __name__ == "__main__":
    main()
