"""One system's decision as one ONNX graph: heads outputs + text embedding -> (label index, score) per item.

What `bst_rt.runtime.policy` and `bst_rt.runtime.candidate_features` do in numpy, item by item, from standard ONNX ops (float64
where numpy computes in float64, so the ranker sees the same float32 rows):

1. evidence (`policy.item_evidence`): audio missing -> the text-only family alone, metadata empty -> the audio-only
   family alone, else the system's pool distribution (heads `pool_probs`) and its families (name order);
2. candidates (`features.candidate_indices`): ensemble top-k, then each selected family's top-1 not yet present;
   held as a fixed [B, k + F] block with a validity mask, in the numpy order, so masked arg-max = numpy's arg-max;
3. the `FEATURE_NAMES` columns, the bundle's ranker (its nodes are copied in, prefixed `ranker/`), the ranker's
   pick (ties keep the base), and eq. 3 (`policy.decide`: item-local, no set-level cap).

Class-text embeddings and the parent table are constants of the graph: the graph is the model. Systems without a
ranker reduce to arg-max of the ensemble and its probability.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from bst_rt.runtime.candidate_features import FEATURE_NAMES
from bst_rt.runtime.policy import SystemPolicy
from bst_rt.runtime.taxonomy import NUM_CLASSES, PARENT_INDEX, PARENTS

from .portable_frontend import _G

OPSET = 17
INPUTS = ("family_probs", "pool_probs", "text_embedding", "audio_present", "text_present")
OUTPUTS = ("label", "score")
D, F, I64, B = TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _ax(g: _G, *axes: int) -> str:
    return g.const(list(axes), np.int64)


def _evidence(g: _G, policy: SystemPolicy, families: Sequence[str], pools: Sequence[str]):
    """(ens [B,23], sel [B,Fs,23], mask [B,Fs] double, fallback [B] bool) as `policy.item_evidence` gives them."""
    fam = g.op("Cast", "family_probs", to=D)
    pool = g.op("Cast", g.op("Gather", "pool_probs", g.const(pools.index(policy.pool), np.int64), axis=1), to=D)
    fa = g.op("Gather", fam, g.const(families.index(policy.fallback_audio_missing), np.int64), axis=1)
    ft = g.op("Gather", fam, g.const(families.index(policy.fallback_text_missing), np.int64), axis=1)
    audio_missing = g.op("Not", "audio_present")
    fallback = g.op("Or", audio_missing, g.op("Not", "text_present"))
    fb = g.op("Where", g.op("Unsqueeze", audio_missing, _ax(g, 1)), fa, ft)
    fb_col = g.op("Unsqueeze", fallback, _ax(g, 1))
    ens = g.op("Where", fb_col, fb, pool)
    chosen = [families.index(f) for f in policy.families]
    sel_normal = g.op("Gather", fam, g.const(chosen, np.int64), axis=1)
    sel = g.op("Where", g.op("Unsqueeze", fb_col, _ax(g, 2)), g.op("Unsqueeze", fb, _ax(g, 1)), sel_normal)
    only_first = g.const([1.0] + [0.0] * (len(chosen) - 1), np.float64)
    mask = g.op("Where", fb_col, only_first, g.const(np.ones(len(chosen)), np.float64))
    return ens, sel, mask


def _candidates(g: _G, ens: str, sel: str, mask: str, k: int, n_fam: int):
    """cands [B, C] int64 (C = k + Fs), valid [B, C] bool, ens top-1 and top-2 values, the families' top-1."""
    values, topk = g.op("TopK", ens, g.const([k], np.int64), axis=1, largest=1, sorted=1, n_out=2)
    fam_top = g.op("ArgMax", sel, axis=2, keepdims=0, select_last_index=0)  # [B, Fs]
    cands = g.op("Concat", topk, fam_top, axis=1)
    c = k + n_fam
    mask_ext = g.op("Concat", g.op("Expand", g.const(np.ones((1, k)), np.float64), g.op("Shape", topk)), mask, axis=1)
    mask_b = g.op("Cast", mask_ext, to=B)
    eq = g.op("Equal", g.op("Unsqueeze", cands, _ax(g, 2)), g.op("Unsqueeze", cands, _ax(g, 1)))  # [B, C, C]
    earlier = g.const(np.tril(np.ones((c, c), dtype=bool), -1))
    dup = g.op("And", g.op("And", eq, earlier), g.op("Unsqueeze", mask_b, _ax(g, 1)))
    valid = g.op("And", mask_b, g.op("Not", g.op("Cast", g.op("ReduceMax", g.op("Cast", dup, to=F), axes=[2],
                                                                  keepdims=0), to=B)))
    return cands, valid, fam_top


def _rank_of(g: _G, ens: str) -> str:
    """[B, 23] rank of each class in the stable descending order (ties: lower index first)."""
    a = g.op("Unsqueeze", ens, _ax(g, 2))  # p_x  [B, 23, 1]
    b = g.op("Unsqueeze", ens, _ax(g, 1))  # p_y  [B, 1, 23]
    lower = g.const(np.tril(np.ones((NUM_CLASSES, NUM_CLASSES), dtype=bool), -1))  # [x, y]: y < x
    before = g.op("Or", g.op("Greater", b, a), g.op("And", g.op("Equal", b, a), lower))
    return g.op("ReduceSum", g.op("Cast", before, to=D), _ax(g, 2), keepdims=0)


def _features(g: _G, ens, sel, mask, cands, valid, fam_top, class_text: np.ndarray) -> str:
    """[B, C, 17] float32 in `FEATURE_NAMES` order (invalid candidate rows hold values nobody reads)."""
    def take(table):  # [B, 23] -> [B, C]
        return g.op("GatherElements", table, cands, axis=1)

    n_cand = g.op("Shape", cands)
    cols: dict[str, str] = {}
    cols["ens_prob"] = take(ens)
    cols["ens_rank"] = take(_rank_of(g, ens))
    values, _ = g.op("TopK", ens, g.const([2], np.int64), axis=1, n_out=2)
    top1 = g.op("Slice", values, _ax(g, 0), _ax(g, 1), _ax(g, 1))
    top2 = g.op("Slice", values, _ax(g, 1), _ax(g, 2), _ax(g, 1))
    cols["ens_gap_to_top1"] = g.op("Sub", top1, cols["ens_prob"])
    fam_c = g.op("GatherElements", sel, g.op("Expand", g.op("Unsqueeze", cands, _ax(g, 1)),
                                             g.op("Concat", g.op("Slice", g.op("Shape", sel), _ax(g, 0), _ax(g, 2)),
                                                  g.op("Slice", n_cand, _ax(g, 1), _ax(g, 2)), axis=0)), axis=2)
    m3 = g.op("Unsqueeze", mask, _ax(g, 2))
    count = g.op("ReduceSum", m3, _ax(g, 1), keepdims=0)  # [B, 1]
    cols["fam_prob_mean"] = g.op("Div", g.op("ReduceSum", g.op("Mul", fam_c, m3), _ax(g, 1), keepdims=0), count)
    on = g.op("Cast", m3, to=B)
    cols["fam_prob_max"] = g.op("ReduceMax", g.op("Where", on, fam_c, g.const(-np.inf, np.float64)), axes=[1],
                                keepdims=0)
    cols["fam_prob_min"] = g.op("ReduceMin", g.op("Where", on, fam_c, g.const(np.inf, np.float64)), axes=[1],
                                keepdims=0)
    cols["fam_prob_spread"] = g.op("Sub", cols["fam_prob_max"], cols["fam_prob_min"])
    hits = g.op("Cast", g.op("Equal", g.op("Unsqueeze", fam_top, _ax(g, 2)), g.op("Unsqueeze", cands, _ax(g, 1))), to=D)
    cols["fam_top1_share"] = g.op("Div", g.op("ReduceSum", g.op("Mul", hits, m3), _ax(g, 1), keepdims=0), count)
    ones = g.op("Cast", g.op("Cast", cands, to=B), to=D)  # shape [B, C]; values overwritten below
    ones = g.op("Add", g.op("Mul", ones, g.const(0.0, np.float64)), g.const(1.0, np.float64))
    logp = g.op("Log", g.op("Max", ens, g.const(1e-12, np.float64)))
    entropy = g.op("Neg", g.op("ReduceSum", g.op("Mul", ens, logp), _ax(g, 1), keepdims=1))
    cols["ens_entropy"] = g.op("Mul", ones, entropy)
    cols["ens_margin"] = g.op("Mul", ones, g.op("Sub", top1, top2))
    onehot = np.zeros((NUM_CLASSES, len(PARENTS)), dtype=np.float64)
    onehot[np.arange(NUM_CLASSES), PARENT_INDEX] = 1.0
    parents = g.op("MatMul", ens, g.const(onehot))  # [B, 5]
    parent_idx = g.const(PARENT_INDEX.astype(np.int64))
    cand_parent = g.op("Gather", parent_idx, cands, axis=0)  # [B, C]
    cols["cand_parent_mass"] = g.op("GatherElements", parents, cand_parent, axis=1)
    base = g.op("Slice", cands, _ax(g, 0), _ax(g, 1), _ax(g, 1))  # [B, 1]
    cols["shares_base_parent"] = g.op("Cast", g.op("Equal", cand_parent, g.op("Gather", parent_idx, base, axis=0)),
                                      to=D)
    # semantic columns (0 without text)
    cls = np.asarray(class_text, dtype=np.float64)
    cls = cls / np.clip(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12, None)
    emb = g.op("Cast", "text_embedding", to=D)
    norm = g.op("Max", g.op("Sqrt", g.op("ReduceSum", g.op("Mul", emb, emb), _ax(g, 1), keepdims=1)),
                g.const(1e-12, np.float64))
    cos_all = g.op("MatMul", g.op("Div", emb, norm), g.const(cls.T.copy()))  # [B, 23]
    cos = take(cos_all)
    ci, cj = g.op("Unsqueeze", cos, _ax(g, 2)), g.op("Unsqueeze", cos, _ax(g, 1))  # [B,C,1] (i), [B,1,C] (j)
    size = g.op("Slice", n_cand, _ax(g, 1), _ax(g, 2))
    pos = g.op("Range", g.const(0, np.int64), g.op("Squeeze", size, _ax(g, 0)), g.const(1, np.int64))
    j_before_i = g.op("Less", g.op("Unsqueeze", pos, _ax(g, 0)), g.op("Unsqueeze", pos, _ax(g, 1)))  # [i, j]
    ahead = g.op("Or", g.op("Greater", cj, ci), g.op("And", g.op("Equal", cj, ci), j_before_i))
    ahead = g.op("And", ahead, g.op("Unsqueeze", valid, _ax(g, 1)))
    has_text = g.op("Unsqueeze", g.op("Cast", "text_present", to=D), _ax(g, 1))  # [B, 1]
    cols["semantic_cos"] = g.op("Mul", cos, has_text)
    cols["semantic_rank"] = g.op("Mul", g.op("ReduceSum", g.op("Cast", ahead, to=D), _ax(g, 2), keepdims=0), has_text)
    cos_base = g.op("GatherElements", cos_all, base, axis=1)
    cols["semantic_cos_minus_base"] = g.op("Mul", g.op("Sub", cos, cos_base), has_text)
    cols["audio_missing"] = g.op("Mul", ones, g.op("Unsqueeze", g.op("Cast", g.op("Not", "audio_present"), to=D),
                                                   _ax(g, 1)))
    cols["text_missing"] = g.op("Sub", ones, g.op("Mul", ones, has_text))
    stacked = g.op("Concat", *[g.op("Unsqueeze", cols[name], _ax(g, 2)) for name in FEATURE_NAMES], axis=2)
    return g.op("Cast", stacked, to=F)


def _eq3(g: _G, policy: SystemPolicy, base, base_prob, choice, s_b, s_r) -> None:
    """`policy.decide`: override when the margin clears tau and the override is parent-safe; item-local."""
    parent_idx = g.const(PARENT_INDEX.astype(np.int64))
    margin = g.op("Sub", s_r, s_b)
    same = g.op("Equal", g.op("Gather", parent_idx, choice, axis=0), g.op("Gather", parent_idx, base, axis=0))
    cross = g.op("And", g.op("Greater", margin, g.const(float(policy.cross_parent_tau), np.float64)),
                 g.op("GreaterOrEqual", s_r, g.const(float(policy.cross_parent_min_score), np.float64)))
    over = g.op("And", g.op("And", g.op("Not", g.op("Equal", choice, base)),
                            g.op("Greater", margin, g.const(float(policy.tau), np.float64))), g.op("Or", same, cross))
    g.op("Where", over, choice, base, name="label")
    g.op("Clip", g.op("Where", over, s_r, base_prob), g.const(0.0, np.float64), g.const(1.0, np.float64), name="score")


def build_decision(policy: SystemPolicy, families: Sequence[str], pools: Sequence[str], class_text: np.ndarray,
                   ranker: onnx.ModelProto | None, positive_column: int = 1) -> onnx.ModelProto:
    """The graph of one system. `families`/`pools` are the heads graph's axis order (manifest.heads)."""
    g = _G()
    families, pools = list(families), list(pools)
    ens, sel, mask = _evidence(g, policy, families, pools)
    opsets = [helper.make_opsetid("", OPSET)]
    if policy.use_ranker:
        if ranker is None:
            raise ValueError(f"system {policy.system_id} uses the ranker but no ranker graph was given")
        n_fam = len(policy.families)
        cands, valid, fam_top = _candidates(g, ens, sel, mask, policy.k, n_fam)
        feats = _features(g, ens, sel, mask, cands, valid, fam_top, class_text)
        g.op("Reshape", feats, g.const([-1, len(FEATURE_NAMES)], np.int64), name="ranker/candidate_features")
        ranker_proto = onnx.compose.add_prefix(ranker, "ranker/")
        g.nodes += list(ranker_proto.graph.node)
        g.inits += list(ranker_proto.graph.initializer)
        opsets += [o for o in ranker_proto.opset_import if o.domain not in ("", "ai.onnx")]
        probs = g.op("Gather", "ranker/probabilities", g.const(positive_column, np.int64), axis=1)
        scores = g.op("Reshape", g.op("Cast", probs, to=D), g.op("Shape", cands))
        masked = g.op("Where", valid, scores, g.const(-np.inf, np.float64))
        best = g.op("ArgMax", masked, axis=1, keepdims=1, select_last_index=0)
        base = g.op("Slice", cands, _ax(g, 0), _ax(g, 1), _ax(g, 1))
        choice = g.op("GatherElements", cands, best, axis=1)
        s_b = g.op("Slice", scores, _ax(g, 0), _ax(g, 1), _ax(g, 1))
        s_r = g.op("GatherElements", scores, best, axis=1)
        base_prob = g.op("GatherElements", ens, base, axis=1)
        sq = _ax(g, 1)
        _eq3(g, policy, *(g.op("Squeeze", t, sq) for t in (base, base_prob, choice, s_b, s_r)))
    else:
        base = g.op("ArgMax", ens, axis=1, keepdims=1, select_last_index=0)
        g.op("Squeeze", base, _ax(g, 1), name="label")
        g.op("Squeeze", g.op("GatherElements", ens, base, axis=1), _ax(g, 1), name="score")
    n_f, n_p = len(families), len(pools)
    inputs = [helper.make_tensor_value_info("family_probs", F, ["batch", n_f, NUM_CLASSES]),
              helper.make_tensor_value_info("pool_probs", F, ["batch", n_p, NUM_CLASSES]),
              helper.make_tensor_value_info("text_embedding", F, ["batch", class_text.shape[1]]),
              helper.make_tensor_value_info("audio_present", B, ["batch"]),
              helper.make_tensor_value_info("text_present", B, ["batch"])]
    outputs = [helper.make_tensor_value_info("label", I64, ["batch"]),
               helper.make_tensor_value_info("score", D, ["batch"])]
    graph = helper.make_graph(g.nodes, f"bst_decision_system_{policy.system_id}", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=opsets, producer_name="bst-rt")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def export_decision(path: Path, *args, **kwargs) -> Path:
    path = Path(path)
    onnx.save_model(build_decision(*args, **kwargs), str(path))
    return path
