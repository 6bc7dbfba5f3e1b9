"""Adds the portable graphs to a bundle being exported: the resampler, the front end and one decision graph per system, each
validated against the numpy code it replaces before it is listed (parity recorded in the manifest).

Reference of the decision graph: the runtime's per-item decision (`policy.item_evidence` for fallbacks,
`features.candidate_features`, the ranker graph, `policy.ranker_choice`, eq. 3, item by item) with the
system's ensemble read from the heads graph's `pool_probs`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from bst_rt.runtime import audio, resample
from bst_rt.runtime import policy as policy_module
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.portable import FRONTEND_FILE, FRONTEND_GRAPH, RESAMPLE_FILE, RESAMPLE_GRAPH, decision_graph
from bst_rt.runtime.session import make_session

from . import portable_decision
from . import portable_frontend, portable_resample

FRONTEND_TOLERANCE = 1e-4  # max abs diff of the log-mel (dB); measured 0 or one float32 ulp
RESAMPLE_TOLERANCE = 1e-5  # max abs diff of the 48 kHz samples vs the numpy design (float32 sums of ~400 taps)
#: rates the resampler is validated on at export (48 kHz must come back bit-identical)
RESAMPLE_RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000)
DECISION_TOLERANCE = 1e-6  # max abs diff of the score; labels must be identical
#: seeded waveforms the front end is validated on at export: short, exactly 10 s, 1 frame over, 25 s
FRONTEND_LENGTHS = (9_600, audio.CLIP_SAMPLES, audio.CLIP_SAMPLES + 480, 25 * audio.SAMPLE_RATE_HZ)


def validation_waveforms(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal(n) * np.sin(np.linspace(0, 40, n)) ** 2).astype(np.float32)
            for n in FRONTEND_LENGTHS]


def frontend_parity(path: Path, waves: Sequence[np.ndarray]) -> dict:
    """Max abs diff of mel_fusion and agreement of `longer` between the graph and `audio.waveform_to_mel_fusion`."""
    s = make_session(path, provider="cpu")
    worst, longer_ok = 0.0, True
    for w in waves:
        mel, longer = s.run(None, {"waveform": w, "length": np.array(w.shape[0], np.int64)})
        ref, ref_longer = audio.waveform_to_mel_fusion(w)
        worst = max(worst, float(np.abs(mel[0] - ref).max()))
        longer_ok &= bool(longer[0]) == ref_longer
    if not longer_ok or worst > FRONTEND_TOLERANCE:
        raise BstError(f"frontend graph: max abs diff {worst:.3g} dB (tolerance {FRONTEND_TOLERANCE}), "
                       f"longer agrees: {longer_ok}")
    return {"tolerance": FRONTEND_TOLERANCE, "max_abs_diff": {"mel_fusion": worst}, "longer_agrees": longer_ok,
            "inputs": f"seeded waveforms of {', '.join(map(str, FRONTEND_LENGTHS))} samples"}


def reference_decision(policy: policy_module.SystemPolicy, families: Sequence[str], pools: Sequence[str], fam: np.ndarray,
                       pool: np.ndarray, text: np.ndarray, audio_present: np.ndarray, text_present: np.ndarray,
                       class_text: np.ndarray, ranker, positive_column: int = 1) -> policy_module.Decisions:
    """The runtime's decision of every item (`policy.decide_items`, the one decision function; the ensemble is the
    system's row of `pool_probs`, as the runtime reads it); `ranker` is an onnxruntime session or None."""
    p_idx = list(pools).index(policy.pool)

    def score_rows(rows: np.ndarray) -> np.ndarray:
        return ranker.run(["probabilities"], {"candidate_features": rows})[0][:, positive_column]

    return policy_module.decide_items(policy, np.asarray(pool[:, p_idx], dtype=np.float64),
                            {f: fam[:, j] for j, f in enumerate(families)}, text, class_text,
                            np.asarray(audio_present, dtype=bool), np.asarray(text_present, dtype=bool),
                            score_rows if policy.use_ranker else None)


def decision_parity(path: Path, policy, families, pools, fam, pool, text, audio_present, text_present, class_text,
                    ranker, positive_column: int = 1) -> dict:
    s = make_session(path, provider="cpu")
    feeds = {"family_probs": fam, "pool_probs": pool, "text_embedding": text, "audio_present": audio_present,
             "text_present": text_present}
    names = {i.name for i in s.get_inputs()}
    label, score = s.run(None, {k: v for k, v in feeds.items() if k in names})
    ref = reference_decision(policy, families, pools, fam, pool, text, audio_present, text_present, class_text,
                             ranker, positive_column)
    agree = float((label == ref.labels).mean())
    worst = float(np.abs(score - ref.scores).max())
    if agree < 1.0 or worst > DECISION_TOLERANCE:
        raise BstError(f"{decision_graph(policy.system_id)}: labels agree on {agree:.4f} of the items, score max abs "
                       f"diff {worst:.3g} (tolerance {DECISION_TOLERANCE})")
    return {"tolerance": DECISION_TOLERANCE, "max_abs_diff": {"score": worst}, "label_agreement": agree,
            "overrides": int(ref.overridden.sum()), "items": int(len(label))}


def resample_parity(path: Path, seed: int = 0) -> dict:
    """Max abs diff between the resample graph and `bst_rt.runtime.resample.resample` on 1.5 s of seeded noise per
    rate; 48 kHz must pass through bit for bit."""
    s = make_session(path, provider="cpu")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for rate in RESAMPLE_RATES:
        x = (0.3 * rng.standard_normal(rate * 3 // 2 + 7)).astype(np.float32)
        got = s.run(None, {"waveform": x, "sample_rate": np.array(rate, np.int64)})[0]
        ref = resample.resample(x, rate)
        if got.shape != ref.shape or (rate == resample.TARGET_RATE_HZ and not np.array_equal(got, x)):
            raise BstError(f"resample graph at {rate} Hz: {got.shape[0]} samples, the design gives {ref.shape[0]}"
                           " (48 kHz must pass through unchanged)")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > RESAMPLE_TOLERANCE:
        raise BstError(f"resample graph: max abs diff {worst:.3g} (tolerance {RESAMPLE_TOLERANCE})")
    return {"tolerance": RESAMPLE_TOLERANCE, "max_abs_diff": {"waveform_48k": worst}, "design": resample.RESAMPLER,
            "inputs": f"1.5 s of seeded noise at {', '.join(map(str, RESAMPLE_RATES))} Hz"}


def add_portable_graphs(staging: Path, policies: Sequence[policy_module.SystemPolicy], families: Sequence[str],
                        pools: Sequence[str], class_text: np.ndarray, ranker_file: str | None,
                        heads_outputs: tuple[np.ndarray, np.ndarray], text: np.ndarray,
                        graph_spec: Callable[..., object], positive_column: int = 1) -> dict:
    """Write resample.onnx, frontend.onnx and decision_system_<N>.onnx into `staging`; return their GraphSpecs.

    `heads_outputs` (family_probs, pool_probs) and `text` are the export's validation items; every 5th item is
    validated as audio-missing and every 7th as metadata-empty so the fallback paths are checked too.
    """
    staging = Path(staging)
    graphs = {}
    portable_resample.export_resample(staging / RESAMPLE_FILE)
    graphs[RESAMPLE_GRAPH] = graph_spec(staging, RESAMPLE_GRAPH, RESAMPLE_FILE, portable_frontend.OPSET, "fp32",
                                        resample_parity(staging / RESAMPLE_FILE))
    portable_frontend.export_frontend(staging / FRONTEND_FILE)
    graphs[FRONTEND_GRAPH] = graph_spec(staging, FRONTEND_GRAPH, FRONTEND_FILE, portable_frontend.OPSET, "fp32",
                                        frontend_parity(staging / FRONTEND_FILE, validation_waveforms()))
    ranker_model = onnx.load(str(staging / ranker_file)) if ranker_file else None
    ranker = make_session(staging / ranker_file, provider="cpu") if ranker_file else None
    fam, pool = heads_outputs
    n = len(fam)
    audio_present = np.arange(n) % 5 != 4
    text_present = (np.arange(n) % 7 != 6) & np.any(text != 0, axis=1)
    for p in policies:
        name = decision_graph(p.system_id)
        file = f"{name}.onnx"
        portable_decision.export_decision(staging / file, p, families, pools, class_text, ranker_model if p.use_ranker else None,
                             positive_column)
        parity = decision_parity(staging / file, p, families, pools, fam, pool, text, audio_present, text_present,
                                 class_text, ranker, positive_column)
        graphs[name] = graph_spec(staging, name, file, portable_decision.OPSET, "fp32", parity)
    return graphs
