"""The portable bundle (issue 15): the front end and the decision as ONNX graphs, proven against the numpy runtime
and from Node.js. Tolerances: front end <= 1e-4 on the audio embedding (end to end through the audio encoder);
decision: identical labels, score <= 1e-6; Node client vs `bst-rt predict`: identical labels, score <= 1e-5."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bst_rt.runtime import audio as audio_module

REAL_CLIPS = Path("/work/shared/audio/librosa-data")
NODE_CLIENT = Path(__file__).resolve().parents[1] / "clients" / "node"


def _real_clips() -> list[Path]:
    clips = sorted(REAL_CLIPS.glob("*.ogg"))
    if not clips:
        pytest.skip(f"no shared real clips in {REAL_CLIPS}")
    return clips


def _session(path):
    from bst_rt.runtime.session import make_session

    return make_session(path, provider="cpu")


def test_frontend_graph_matches_numpy_end_to_end_on_real_clips(clap_graphs, tmp_path):
    from bst_rt.export.portable_frontend import export_frontend
    from bst_rt.runtime.encoders import AUDIO_GRAPH, AudioEncoder

    frontend = _session(export_frontend(tmp_path / "frontend.onnx"))
    encoder = AudioEncoder(Path(clap_graphs) / AUDIO_GRAPH)
    mel_err, longer, graph_mels, numpy_mels = 0.0, [], [], []
    for path in _real_clips():
        ref_mel, ref_longer = audio_module.file_to_mel_fusion(path)  # the runtime's streaming path from the file
        wave = audio_module.load_audio(path)  # what a caller hands the graph: decoded, mono, soxr HQ 48 kHz
        mel, lg = frontend.run(None, {"waveform": wave, "length": np.array(wave.shape[0], np.int64)})
        mel_err = max(mel_err, float(np.abs(mel[0] - ref_mel).max()))
        assert bool(lg[0]) == ref_longer, path.name
        graph_mels.append(mel[0])
        numpy_mels.append(ref_mel)
        longer.append(ref_longer)
    flags = np.array(longer)
    emb_graph = encoder.embed_mel(np.stack(graph_mels), flags)
    emb_numpy = encoder.embed_mel(np.stack(numpy_mels), flags)
    emb_err = float(np.abs(emb_graph - emb_numpy).max())
    print(f"\nfrontend graph vs numpy on {len(flags)} real clips ({int(flags.sum())} longer than 10 s): "
          f"mel max abs diff {mel_err:.3g} dB, audio embedding max abs diff {emb_err:.3g} (tolerance 1e-4)")
    assert flags.any() and not flags.all()
    assert emb_err <= 1e-4


def test_frontend_graph_handles_boundary_lengths(tmp_path):
    """Lengths where the chunk rule and the shrink change behaviour, and a `length` shorter than the buffer."""
    from bst_rt.export.portable_frontend import export_frontend

    frontend = _session(export_frontend(tmp_path / "frontend.onnx"))
    rng = np.random.default_rng(1)
    for n in (1, 600, audio_module.CLIP_SAMPLES - 1, audio_module.CLIP_SAMPLES, audio_module.CLIP_SAMPLES + 479, audio_module.CLIP_SAMPLES + 480, 1_000_003):
        wave = rng.uniform(-1.2, 1.2, n + 7).astype(np.float32)  # 7 trailing samples the graph must ignore
        wave[0] = np.nan
        mel, lg = frontend.run(None, {"waveform": wave, "length": np.array(n, np.int64)})
        ref, ref_longer = audio_module.waveform_to_mel_fusion(np.nan_to_num(wave[:n], nan=0.0))
        assert bool(lg[0]) == ref_longer, n
        assert float(np.abs(mel[0] - ref).max()) <= 1e-4, n


# ---- decision graphs ---------------------------------------------------------------------------------------------
def test_decision_graph_matches_numpy_on_random_evidence_with_ties_and_fallbacks(tmp_path):
    """Cheap and bundle-free: a small ranker on random rows, random heads outputs (some all-tied), both fallbacks,
    thresholds that make the ranker override often; the reference is the runtime's own numpy functions."""
    import onnx
    from sklearn.ensemble import HistGradientBoostingClassifier

    from bst_rt.export import ranker as ranker_module
    from bst_rt.export.portable import reference_decision
    from bst_rt.export.portable_decision import build_decision
    from bst_rt.runtime import policy as policy_module
    from bst_rt.runtime.candidate_features import NUM_FEATURES

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, NUM_FEATURES)).astype(np.float32)
    est = HistGradientBoostingClassifier(max_iter=20).fit(x, (x[:, 0] + x[:, 12] > 0).astype(int))
    ranker_path = ranker_module.export_ranker(est, NUM_FEATURES, tmp_path / "ranker.onnx")
    families, pools = ["a", "b", "audio-only", "c", "text-only"], ["p1", "p2"]
    weights = {"p1": {"a": 0.5, "b": 0.3, "c": 0.2}, "p2": {"a": 1.0}}
    policies = [
        policy_module.SystemPolicy(1, "s1", "p1", weights["p1"], True, k=3, tau=0.05, cross_parent_tau=0.2,
                         cross_parent_min_score=0.5),
        policy_module.SystemPolicy(2, "s2", "p2", weights["p2"], False),
        policy_module.SystemPolicy(3, "s3", "p1", weights["p1"], True, k=2, tau=-1.0, cross_parent_tau=-1.0,
                         cross_parent_min_score=0.0),
    ]
    n = 300
    logits = rng.standard_normal((n, len(families), 23)) * 3
    logits[:10] = 0.0  # every class tied: the order rules decide
    fam = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    w = np.array([[weights[p].get(f, 0.0) for f in families] for p in pools])
    pool = np.einsum("bfc,pf->bpc", fam, w).astype(np.float32)
    text = rng.standard_normal((n, 512)).astype(np.float32)
    class_text = rng.standard_normal((23, 512)).astype(np.float32)
    audio_present, text_present = rng.random(n) > 0.2, rng.random(n) > 0.2
    ranker = _session(ranker_path)
    overrides = 0
    for p in policies:
        graph = build_decision(p, families, pools, class_text, onnx.load(str(ranker_path)) if p.use_ranker else None)
        onnx.save(graph, str(tmp_path / f"decision_{p.system_id}.onnx"))
        s = _session(tmp_path / f"decision_{p.system_id}.onnx")
        feeds = {"family_probs": fam, "pool_probs": pool, "text_embedding": text, "audio_present": audio_present,
                 "text_present": text_present}
        label, score = s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})
        ref = reference_decision(p, families, pools, fam, pool, text, audio_present, text_present, class_text, ranker)
        assert (label == ref.labels).all(), p.system_id
        assert float(np.abs(score - ref.scores).max()) <= 1e-6, p.system_id
        overrides += int(ref.overridden.sum())
    assert overrides > 0


@pytest.fixture(scope="module")
def real_package(synth_corpus, tmp_path_factory):
    """An evaluation package: the shared real clips resampled to 48 kHz (float WAV of what the runtime decodes)
    and the synthetic evaluation clips (every decodable one at 48 kHz), with their metadata and traps."""
    import soundfile as sf

    from bst_rt.runtime.datasets import read_eval_package

    root = tmp_path_factory.mktemp("portable_eval") / "eval"
    (root / "audio").mkdir(parents=True)
    rows = []
    for k, path in enumerate(_real_clips()):
        clip_id = f"real-{k:02d}"
        sf.write(root / "audio" / f"{clip_id}.wav", audio_module.load_audio(path), audio_module.SAMPLE_RATE_HZ, subtype="FLOAT")
        txt = path.with_suffix(".txt")
        desc = txt.read_text(encoding="utf-8") if txt.is_file() else ""
        rows.append((clip_id, path.stem.replace("_", " ") if k % 4 else "", "music,recording" if k % 3 else "",
                     desc if k % 5 else ""))
    for clip in read_eval_package(synth_corpus.eval).clips:
        if clip.audio_path is not None:
            # as they are, at their own rates, traps included: the client decodes and resamples them itself
            shutil.copy2(clip.audio_path, root / "audio" / clip.audio_path.name)
        rows.append((clip.id, clip.title, clip.tags, clip.description))
    with open(root / "eval_metadata.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("anonymous_id", "title", "tags", "description"))
        writer.writerows(rows)
    return root


def test_decision_graphs_match_the_python_decision_for_all_systems(bundle, real_package):
    from bst_rt.runtime.bundle import load_bundle
    from bst_rt.runtime.datasets import read_eval_package
    from bst_rt.runtime.portable import decision_graph
    from bst_rt.runtime.predict import Predictor

    b = load_bundle(bundle)
    clips = read_eval_package(real_package).clips
    predictor = Predictor.load(b, system=1, provider="cpu", threads=2)
    ev = predictor._evidence(clips)
    assert (~ev.audio_present).any() and (~ev.text_present).any()  # both fallback paths are exercised
    for system in sorted(b.manifest.systems):
        other = predictor.with_system(int(system))
        python = other._decide(clips, ev, int(system))  # policy.decide_items: eq. 3 item by item, as the runtime does
        graph = _session(b.path(b.graph(decision_graph(system)).file))
        feeds = {"family_probs": ev.family_probs, "pool_probs": ev.pool_probs, "text_embedding": ev.text,
                 "audio_present": ev.audio_present, "text_present": ev.text_present}
        label, score = graph.run(None, {i.name: feeds[i.name] for i in graph.get_inputs()})
        want_labels = np.array([p.label for p in python])
        want_scores = np.array([p.score for p in python])
        codes = np.array(b.manifest.classes)[label]
        err = float(np.abs(score - want_scores).max())
        overrides = sum(p.overridden for p in python)
        print(f"\nsystem {system}: {len(clips)} items, {overrides} overrides, labels equal "
              f"{(codes == want_labels).mean():.4f}, score max abs diff {err:.3g} (tolerance 1e-6)")
        assert (codes == want_labels).all()
        assert err <= 1e-6


def test_manifest_describes_the_portable_chain(bundle):
    from bst_rt.runtime.bundle import load_bundle

    m = load_bundle(bundle).manifest
    p = m.portable
    assert p["contract"] == "bst-portable-v2"
    assert p["steps"][0]["graph"] == "resample" and "resample" in p["caller_audio"]
    assert m.graphs["resample"].parity["max_abs_diff"]["waveform_48k"] <= 1e-5
    for step in p["steps"]:
        name = step["graph"]
        graphs = [p["decision_graphs"][s] for s in m.systems] if name == "decision_system_<N>" else [name]
        for g in graphs:
            spec = m.graphs[g]
            assert set(step["feeds"]) >= {t.name for t in spec.inputs}, (g, step["feeds"])
    assert m.graphs["frontend"].parity["max_abs_diff"]["mel_fusion"] <= 1e-4
    for s in m.systems:
        parity = m.graphs[p["decision_graphs"][s]].parity
        assert parity["label_agreement"] == 1.0 and parity["max_abs_diff"]["score"] <= 1e-6


def test_portable_chain_in_python_agrees_with_the_predictor(bundle, synth_corpus):
    """The graph-only chain (no numpy front end, features or policy) vs the numpy runtime, item by item."""
    import soundfile as sf

    from bst_rt.runtime.bundle import load_bundle
    from bst_rt.runtime.datasets import read_eval_package
    from bst_rt.runtime.errors import AudioError
    from bst_rt.runtime.portable import PortableChain
    from bst_rt.runtime.predict import Predictor

    b = load_bundle(bundle)
    clips = read_eval_package(synth_corpus.eval).clips[:12]
    want = list(Predictor.load(b, system=1, provider="cpu", threads=2).predict_clips(clips, batch_size=4))
    waves = []
    for c in clips:  # what a foreign caller does: decode and mix to mono, at the file's own rate
        try:
            data, rate = sf.read(str(c.audio_path), dtype="float32", always_2d=True) if c.audio_path else (None, 0)
            waves.append((data.mean(axis=1), rate) if data is not None and len(data) else None)
        except (AudioError, RuntimeError, sf.LibsndfileError):
            waves.append(None)
    label, score = PortableChain(b, 1, threads=2).predict(waves, [c.text for c in clips])
    assert [b.manifest.classes[i] for i in label] == [p.label for p in want]
    assert float(np.abs(score - np.array([p.score for p in want])).max()) <= 1e-5


# ---- the Node.js client ------------------------------------------------------------------------------------------
def _read_csv(path: Path) -> dict[str, tuple[str, float]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["id"]: (r["predicted_bst_second_level_class"], float(r["prediction_score"])) for r in csv.DictReader(fh)}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_client_matches_bst_rt_predict(bundle, real_package, tmp_path):
    if not (NODE_CLIENT / "node_modules" / "onnxruntime-node").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True, timeout=600)
    for system in ("1",):  # a ranker system; the decision graphs of all four are compared above (CI time)
        py_out, node_out = tmp_path / f"py{system}.csv", tmp_path / f"node{system}.csv"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bst_rt.runtime", "predict", str(real_package), "--bundle", str(bundle),
                        "-o", str(py_out), "--system", system, "--threads", "1", "--provider", "cpu"],
                       check=True, capture_output=True, text=True, timeout=900)
        t1 = time.perf_counter()
        proc = subprocess.run(["node", str(NODE_CLIENT / "predict.mjs"), str(bundle), str(real_package),
                               str(node_out), "--system", system], capture_output=True, text=True, timeout=900)
        t2 = time.perf_counter()
        assert proc.returncode == 0, proc.stderr
        py, node = _read_csv(py_out), _read_csv(node_out)
        assert list(py) == list(node)
        same = sum(py[k][0] == node[k][0] for k in py)
        err = max(abs(py[k][1] - node[k][1]) for k in py)
        print(f"\nsystem {system}: {len(py)} items; node labels equal {same}/{len(py)}, score max abs diff {err:.2g}; "
              f"bst-rt predict {t1 - t0:.1f} s, node client {t2 - t1:.1f} s (1 thread each, incl. start-up)")
        assert same == len(py)
        assert err <= 1e-5


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_client_refuses_a_tampered_bundle_or_an_unknown_system_in_one_line(bundle, real_package, tmp_path):
    """The Node client enforces the manifest's sha256 of every graph it opens (chain.mjs, as the page does)."""
    if not (NODE_CLIENT / "node_modules" / "onnxruntime-node").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True, timeout=600)
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for item in Path(bundle).iterdir():
        (tampered / item.name).symlink_to(item)
    (tampered / "heads.onnx").unlink()
    (tampered / "heads.onnx").write_bytes((Path(bundle) / "heads.onnx").read_bytes() + b"\0")
    for folder, system, expected in ((tampered, "1", "heads.onnx: sha256 "), (Path(bundle), "9", "no system 9")):
        out = tmp_path / f"out-{system}.csv"
        proc = subprocess.run(["node", str(NODE_CLIENT / "predict.mjs"), str(folder), str(real_package), str(out),
                               "--system", system], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and not out.exists(), proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
