"""`bst-train export RUN --out DIR`: one self-contained bundle the torch-free runtime can load and verify.

Contents: CLAP audio/text graphs + tokenizer.json (optionally int8 variants), the fused heads graph, the ranker
graph, the class-description embeddings (computed with the bundle's own text graph, so the runtime's semantic
feature sees the encoder it runs), and manifest.json. Each graph is validated against its source before the bundle
is written (`export.validate`); the bundle is assembled in a staging folder and renamed into place, so a failed
export never leaves a half bundle at `--out`.

It is one staging transaction (build, validate, describe, rename) whose steps share the staging folder and the
parity records; the graphs themselves are built in clap.py, heads.py, ranker.py and portable*.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bst_rt.runtime import audio as rt_audio
from bst_rt.runtime.atomic import atomic_save_npy, atomic_write_text
from bst_rt.runtime.datasets import read_dev_dataset
from bst_rt.runtime.encoders import TextEncoder
from bst_rt.runtime.hashing import file_sha256
from bst_rt.runtime.provenance import package_versions
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.candidate_features import FEATURE_NAMES, NUM_FEATURES
from bst_rt.runtime.int8_format import DEFAULT_INT8_FORMAT, INT8_FORMATS, LEGACY_INT8_FORMAT
from bst_rt.runtime.layout import BUNDLE_CLASS_TEXT_FILE
from bst_rt.runtime.manifest import (
    MANIFEST_NAME, SCHEMA_VERSION, AudioSpec, FileSpec, GraphSpec, HeadsSpec, Manifest, TensorSpec, TextSpec,
)
from bst_rt.runtime.policy import AUDIO_ONLY, TEXT_ONLY, ItemCandidates, SystemPolicy, decide_candidates, item_candidates
from bst_rt.runtime.portable import portable_section
from bst_rt.runtime.session import make_session
from bst_rt.runtime.taxonomy import CODES
from bst_rt.runtime.text import MAX_TOKENS, TEMPLATE_VERSION
from bst_rt.train.embed import class_description_texts
from bst_rt.train.models import family_probs
from bst_rt.train.run import DEV_EVAL_JSON, Run, load_fold_models, load_run, read_json
from bst_rt.train.systems import load_ranker, load_systems

from . import clap as clap_module
from . import heads as heads_module
from . import portable as portable_module
from . import ranker as ranker_module
from . import validate as validate_module
from .heads import FusedHeads, HeadsLayout

Log = Callable[[str], None]
HEADS_FILE = "heads.onnx"
RANKER_FILE = "ranker.onnx"
CLASS_TEXT_FILE = BUNDLE_CLASS_TEXT_FILE
VALIDATION_ITEMS = 256
PROVENANCE_PACKAGES = ("bst-rt", "torch", "laion-clap", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy",
                       "tokenizers", "soxr", "soundfile")


@dataclass(frozen=True)
class ExportOptions:
    clap_dir: Path | None = None  # already exported CLAP graphs (export.clap.export_clap output) to reuse
    clap_ckpt: Path | None = None
    tokenizer_dir: Path | None = None  # a real roberta-base tokenizer folder (vocab.json + merges.txt)
    random_weights: bool = False
    seed: int = 0
    int8: bool = False
    int8_format: str = DEFAULT_INT8_FORMAT  # bst_rt.runtime.int8_format.INT8_FORMATS
    data_dir: Path | None = None  # dev dataset whose embeddings validate the heads (default: the run's dev_root)
    force: bool = False


@dataclass(frozen=True)
class ClapGraphs:
    """The CLAP graphs placed in the staging folder: their manifest graph specs, the external weight files (manifest
    file key -> file name), the tokenizer file, the export's provenance record and whether the weights are random."""

    graphs: dict[str, GraphSpec]
    weights: dict[str, str]
    tokenizer: str
    provenance: dict
    random: bool


def export_bundle(run_dir: Path, out: Path, opts: ExportOptions = ExportOptions(), log: Log = print) -> Manifest:
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and not opts.force:
        raise BstError(f"{out}: exists; pass --force to replace it")
    if opts.clap_dir is None and not (opts.clap_ckpt or opts.random_weights):
        raise BstError("give --clap-ckpt PATH (the LAION-CLAP fusion checkpoint) or --random-weights (demo only)")
    if opts.int8 and opts.int8_format not in INT8_FORMATS:
        raise BstError(f"unknown int8 format {opts.int8_format!r}: choose one of {', '.join(INT8_FORMATS)}")
    run = load_run(run_dir)
    policies = load_systems(run_dir)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        clap = _clap_graphs(staging, opts, log)
        class_text = _class_text_embeddings(staging, clap, _dev_root(run, opts))
        graphs = {**clap.graphs}
        layout = heads_module.make_layout({p.pool: p.weights for p in policies},
                                always=(TEXT_ONLY, AUDIO_ONLY))
        log(f"heads: {len(layout.families)} families x 5 folds, pools {', '.join(layout.pools)}")
        heads = heads_module.build_heads(run, layout)
        heads_module.export_heads(heads, staging / HEADS_FILE)
        audio, text, masked, source = _validation_embeddings(run, opts)
        graphs["heads"] = _heads_spec(staging, heads, run, layout, audio, text, masked, source)
        ranker_info: dict = {}
        if any(p.use_ranker for p in policies):
            model, meta = load_ranker(run_dir)
            ranker_policy = next(p for p in policies if p.use_ranker)
            cands = _ranker_candidates(heads, layout, ranker_policy, audio, text, masked, class_text)
            ranker_module.export_ranker(model, NUM_FEATURES, staging / RANKER_FILE)
            graphs["ranker"] = _ranker_spec(staging, model, cands, [p for p in policies if p.use_ranker])
            if list(meta["feature_names"]) != list(FEATURE_NAMES):
                raise BstError(f"{run_dir}/ranker/ranker.json: feature names differ from this bst-rt's; rerun `bst-train rank`")
            ranker_info = {"feature_names": list(FEATURE_NAMES), "k": meta["k"], "pool": meta["pool"],
                           "positive_column": int(list(model.classes_).index(1)), "estimator": meta["estimator"],
                           "thresholds": meta["thresholds"], "nested_cv": meta.get("nested_cv", {}),
                           "model_sha256": meta["model_sha256"]}
        graphs.update(_portable_graphs(staging, policies, layout, class_text, graphs, ranker_info,
                                       audio, text, masked))
        manifest = _manifest(staging, run, policies, layout, graphs, clap, ranker_info, opts)
        _publish(staging, out, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"bundle {manifest.bundle_id} written to {out}")
    return manifest


def _publish(staging: Path, out: Path, manifest: Manifest) -> None:
    """The manifest last, then the whole folder renamed into place: a bundle is never seen half-written."""
    atomic_write_text(staging / MANIFEST_NAME, manifest.to_json())
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


# ---- CLAP -------------------------------------------------------------------------------------------------------
def _place(src: Path, dst: Path) -> None:
    """Hard link when possible (the text graph is ~500 MB), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _clap_graphs(staging: Path, opts: ExportOptions, log: Log) -> ClapGraphs:
    if opts.clap_dir is not None:
        src = Path(opts.clap_dir)
        names = [clap_module.AUDIO_GRAPH, clap_module.TEXT_GRAPH, clap_module.TOKENIZER_FILE] + ([clap_module.AUDIO_INT8, clap_module.TEXT_INT8] if opts.int8 else [])
        for name in names:
            if not (src / name).is_file():
                raise BstError(f"{src / name}: missing from the CLAP graph folder")
            _place(src / name, staging / name)
        parity = json.loads((src / "clap_parity.json").read_text(encoding="utf-8"))
        clap_module.check_parity(parity)  # measured when that folder was exported; the tolerances are re-checked here
        if opts.int8 and parity.get("int8_format", LEGACY_INT8_FORMAT) != opts.int8_format:
            parity = requantize_clap(staging, parity, opts.int8_format, log)
    else:
        from bst_rt.train.clap import load_clap

        log("building LAION-CLAP" + (" at RANDOM weights (demo only)" if opts.random_weights else ""))
        model = load_clap(opts.clap_ckpt, random_weights=opts.random_weights, seed=opts.seed,
                          tokenizer_dir=opts.tokenizer_dir)
        parity = clap_module.export_clap(model, staging, int8=opts.int8, int8_format=opts.int8_format)
        (staging / "clap_parity.json").unlink(missing_ok=True)
    weights = {f"{name}_weights": _externalise_weights(staging, file)
               for name, file in (("audio_encoder", clap_module.AUDIO_GRAPH), ("text_encoder", clap_module.TEXT_GRAPH))}
    graphs = {
        "audio_encoder": _graph_spec(staging, "audio_encoder", clap_module.AUDIO_GRAPH, clap_module.OPSET, "fp32",
                                     {"tolerance": parity["tolerance_max_abs_diff"],
                                      "max_abs_diff": {"audio_embedding": parity["audio_fp32_max_abs_diff"]}}),
        "text_encoder": _graph_spec(staging, "text_encoder", clap_module.TEXT_GRAPH, clap_module.OPSET, "fp32",
                                    {"tolerance": parity["tolerance_max_abs_diff"],
                                     "max_abs_diff": {"text_embedding": parity["text_fp32_max_abs_diff"]}}),
    }
    if opts.int8:
        graphs.update(int8_graph_specs(staging, parity))
    prov = parity.get("provenance", {})
    return ClapGraphs(graphs, weights, clap_module.TOKENIZER_FILE, prov,
                      prov.get("weights") == "random" or bool(prov.get("random_weights", opts.random_weights)))


def requantize_clap(folder: Path, parity: dict, int8_format: str, log: Log) -> dict:
    """The int8 graphs in `folder` quantised again from its fp32 ones in `int8_format`; their cosines measured
    again (int8 against the fp32 graph beside it) and checked. Returns the updated parity record."""
    from . import clap as clap_module

    log(f"int8 CLAP graphs: quantising as {int8_format}")
    for name in (clap_module.AUDIO_INT8, clap_module.TEXT_INT8):
        (folder / name).unlink(missing_ok=True)  # may be a hard link into the CLAP graph folder: never write through
    clap_module.quantize_clap_int8(folder, folder, int8_format)
    parity = {**parity, **clap_module.measure_int8_cosines(folder, clap_module.PARITY_TEXTS),
              "int8_format": int8_format}
    clap_module.check_parity(parity)
    return parity


def requantize_bundle(bundle: Path, out: Path, int8_format: str, log: Log = print) -> Manifest:
    """A copy of `bundle` (files hard-linked) whose int8 CLAP graphs are in `int8_format`: the bench's int8 format
    table measures each format's labels through the runtime this way. Written in a staging folder, renamed."""
    from bst_rt.runtime.bundle import load_bundle

    src = load_bundle(Path(bundle))
    out = Path(out)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        # quantised first, then the rest hard-linked: onnx refuses to read external weights (the fp32 graphs'
        # .data files) that have more than one hard link
        log(f"int8 CLAP graphs: quantising as {int8_format}")
        if any(src.path(f.file).stat().st_nlink > 1 for f in src.manifest.all_files() if f.file.endswith(".data")):
            # the source bundle's own weights are hard links (into a CLAP graph folder)
            clap_module.quantize_clap_int8_from_copies(src.root, staging, int8_format)
        else:
            clap_module.quantize_clap_int8(src.root, staging, int8_format)
        for spec in src.manifest.all_files():
            if spec.file not in (clap_module.AUDIO_INT8, clap_module.TEXT_INT8):
                _place(src.path(spec.file), staging / spec.file)
        graphs = src.manifest.graphs
        old = graphs["audio_encoder_int8"].parity if "audio_encoder_int8" in graphs else {}
        parity = {"int8_min_cosine_required": old.get("cosine_required", validate_module.INT8_MIN_COSINE),
                  **clap_module.measure_int8_cosines(staging, clap_module.PARITY_TEXTS), "int8_format": int8_format}
        validate_module.check_limits("int8 CLAP graphs", parity, {}, {
            "audio_int8_min_cosine": validate_module.INT8_MIN_COSINE, "text_int8_min_cosine": validate_module.INT8_MIN_COSINE})
        # a new id: a run journal of the source bundle must not resume with other int8 graphs
        manifest = dataclasses.replace(src.manifest, graphs={**graphs, **int8_graph_specs(staging, parity)},
                                       bundle_id=f"{src.manifest.bundle_id}+{int8_format}")
        _publish(staging, out, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def int8_graph_specs(staging: Path, parity: dict) -> dict[str, GraphSpec]:
    """The manifest entries of the two int8 CLAP graphs in `staging`, with their measured cosines and weight format
    (`clap_parity.json` of a folder exported before formats were recorded: the legacy uint8 one)."""
    from . import clap as clap_module

    fmt = parity.get("int8_format", LEGACY_INT8_FORMAT)
    return {name: _graph_spec(staging, name, file, clap_module.OPSET, "int8",
                              {"cosine_min": parity[key], "cosine_required": parity["int8_min_cosine_required"]},
                              int8_format=fmt)
            for name, file, key in (("audio_encoder_int8", clap_module.AUDIO_INT8, "audio_int8_min_cosine"),
                                    ("text_encoder_int8", clap_module.TEXT_INT8, "text_int8_min_cosine"))}


def _externalise_weights(staging: Path, file: str) -> str:
    """Move a graph's weights into `<file>.data` beside it (ONNX external data) and return that name.

    onnxruntime then reads the initializers straight from the data file instead of holding the parsed model and its
    tensors at once: the 500 MB text encoder's session drops from about 755 MB to 411 MB of peak RSS. The graph's
    numbers do not change (same tensors, other container); both files are hashed in the manifest.
    """
    import onnx

    path = staging / file
    data_name = f"{file}.data"
    model = onnx.load(str(path))
    path.unlink()  # may be a hard link into the CLAP graph folder: never write through it
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    for written in (path, staging / data_name):
        os.chmod(written, 0o644)
    return data_name


def _class_text_embeddings(staging: Path, clap: ClapGraphs, root: Path | None) -> np.ndarray:
    """The 23 class descriptions (the dev set's BST_description.csv when present, as `bst-train embed` reads them) through
    the bundle's own fp32 text graph: what the runtime's semantic feature compares to."""
    enc = TextEncoder(staging / clap.graphs["text_encoder"].file, staging / clap.tokenizer, provider="cpu")
    emb = np.asarray(enc.embed(class_description_texts(root)), dtype=np.float32)
    atomic_save_npy(staging / CLASS_TEXT_FILE, emb)
    return emb


# ---- heads and ranker ----------------------------------------------------------------------------------------------
def _dev_root(run: Run, opts: ExportOptions) -> Path | None:
    """The dev set the export reads (class descriptions, validation embeddings): --data, else the run's own."""
    return opts.data_dir or (Path(run.registry["dev_root"]) if run.registry.get("dev_root") else None)


def _validation_embeddings(run: Run, opts: ExportOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Real dev embeddings when the data is at hand (the run's dev_root or --data), else seeded unit vectors."""
    root = _dev_root(run, opts)
    if root is not None and (Path(root) / "features").is_dir():
        ds = read_dev_dataset(Path(root))
        n = min(VALIDATION_ITEMS, len(ds.ids))
        a, t, m = (ds.load_embeddings(kind, missing="zero")[:n] for kind in ("audio", "text", "text_masked"))
        return a, t, m, f"dev embeddings of {root} ({n} items)"
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((3, VALIDATION_ITEMS, heads_module.EMBEDDING_DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=2, keepdims=True)
    return vecs[0], vecs[1], vecs[2], f"seeded random unit vectors ({VALIDATION_ITEMS} items)"


def _heads_spec(staging: Path, heads: FusedHeads, run: Run, layout: HeadsLayout, audio: np.ndarray,
                text: np.ndarray, masked: np.ndarray, source: str) -> GraphSpec:
    feeds = dict(zip(heads_module.INPUT_NAMES, (audio, text, masked)))
    record = validate_module.validate_graph("heads", staging / HEADS_FILE, feeds,
                                lambda: dict(zip(heads_module.OUTPUT_NAMES, heads_module.torch_heads(heads, audio, text, masked))))
    one = validate_module.validate_graph("heads", staging / HEADS_FILE, {k: v[:1] for k, v in feeds.items()},
                             lambda: dict(zip(heads_module.OUTPUT_NAMES, heads_module.torch_heads(heads, audio[:1], text[:1], masked[:1]))))
    # the wrapper itself vs the training side's own definition (load_fold_models + family_probs), family by family
    fused = heads_module.torch_heads(heads, audio, text, masked)[0]
    chain = {f: family_probs(load_fold_models(run, f), audio, text, masked) for f in layout.families}
    wrapper_err = max(float(np.abs(fused[:, i] - chain[f]).max()) for i, f in enumerate(layout.families))
    validate_module.check_close("heads (wrapper vs train.models.family_probs)", {"x": np.array([wrapper_err])}, {"x": np.zeros(1)},
                    validate_module.TOLERANCES["heads"])
    record.update(batch_1=one["max_abs_diff"], wrapper_vs_family_probs=wrapper_err, inputs=source)
    return _graph_spec(staging, "heads", HEADS_FILE, heads_module.OPSET, "fp32", record)


def _ranker_candidates(heads: FusedHeads, layout: HeadsLayout, policy: SystemPolicy, audio: np.ndarray,
                       text: np.ndarray, masked: np.ndarray, class_text: np.ndarray) -> ItemCandidates:
    """Real candidate rows: the validation items through the torch heads (the ensemble is the graph source's
    `pool_probs` row of the policy's pool, as the runtime reads it) and `policy.item_candidates`."""
    fam, pool = heads_module.torch_heads(heads, audio, text, masked)
    present = np.any(text != 0, axis=1)
    return item_candidates(policy, pool[:, layout.pools.index(policy.pool)],
                           {f: fam[:, j] for j, f in enumerate(layout.families)}, text, class_text,
                           np.ones(len(audio), dtype=bool), present)


def _ranker_spec(staging: Path, model: Any, cands: ItemCandidates, policies: list[SystemPolicy]) -> GraphSpec:
    """Ranker graph vs sklearn on the rows, then each ranker system's decisions (`policy.decide_candidates`, the
    runtime's decision function) with ONNX scores vs sklearn scores: labels must agree on every item."""
    rows = cands.rows
    labels, probs = ranker_module.sklearn_ranker(model, rows)
    got = validate_module.run_graph(staging / RANKER_FILE, {ranker_module.INPUT_NAME: rows})
    record = validate_module.check_close("ranker", {"probabilities": got["probabilities"]}, {"probabilities": probs},
                             validate_module.TOLERANCES["ranker"])
    record.update(validate_module.check_labels("ranker", got["label"], labels))
    column = int(list(model.classes_).index(1))
    for p in policies:
        onnx_dec = decide_candidates(p, cands, lambda r: got["probabilities"][:, column])
        source_dec = decide_candidates(p, cands, lambda r: probs[:, column])
        record[f"system{p.system_id}_decisions"] = validate_module.check_labels(f"system {p.system_id} decisions",
                                                                    onnx_dec.labels, source_dec.labels)
    return _graph_spec(staging, "ranker", RANKER_FILE, ranker_module.OPSET, "fp32", record)


def _portable_graphs(staging: Path, policies: list[SystemPolicy], layout: HeadsLayout, class_text: np.ndarray,
                     graphs: dict[str, GraphSpec], ranker_info: dict, audio: np.ndarray, text: np.ndarray,
                     masked: np.ndarray) -> dict[str, GraphSpec]:
    """The front end and each system's decision as graphs (docs/portable.md), validated on the export's items."""
    heads = make_session(staging / HEADS_FILE, provider="cpu")
    feeds = dict(zip(heads_module.INPUT_NAMES, (audio, text, masked)))
    outs = heads.run(list(heads_module.OUTPUT_NAMES), {i.name: feeds[i.name] for i in heads.get_inputs()})
    ranker_file = graphs["ranker"].file if "ranker" in graphs else None
    return portable_module.add_portable_graphs(staging, policies, layout.families, layout.pools, class_text, ranker_file,
                                  (outs[0], outs[1]), text, _graph_spec,
                                  positive_column=int(ranker_info.get("positive_column", 1)))


# ---- manifest ----------------------------------------------------------------------------------------------------
def _tensor_specs(args: Sequence[Any]) -> list[TensorSpec]:
    """onnxruntime NodeArgs (a session's inputs or outputs) as manifest tensor specs."""
    return [TensorSpec(a.name, str(a.type), [d if isinstance(d, int) else str(d) for d in a.shape]) for a in args]


def _graph_spec(staging: Path, name: str, file: str, opset: int, precision: str, parity: dict,
                int8_format: str = "") -> GraphSpec:
    path = staging / file
    session = make_session(path, provider="cpu")
    return GraphSpec(name=name, file=file, sha256=file_sha256(path), size=path.stat().st_size, opset=opset,
                     precision=precision, inputs=_tensor_specs(session.get_inputs()),
                     outputs=_tensor_specs(session.get_outputs()), parity=parity, int8_format=int8_format)


def _file_spec(staging: Path, file: str) -> FileSpec:
    return FileSpec(file, file_sha256(staging / file), (staging / file).stat().st_size)


def _git_revision() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _override_rates(policies: list[SystemPolicy]) -> dict:
    """Each ranker system's held-out override rates measured at tuning (`bst-train rank`) and its share."""
    return {f"system{p.system_id}": {"max_override_share": p.max_override_share,
                                     "heldout_override_rate": p.tuning.get("heldout_override_rate"),
                                     "nested_override_rate": p.tuning.get("nested_override_rate")}
            for p in policies if p.use_ranker}


def _scores(run: Run, ranker_info: dict) -> dict:
    reg = run.registry
    families = {f: {k: e.get(k) for k in ("hF_mean", "hF_std", "hF_oof", "excluded")}
                for f, e in reg.get("families", {}).items() if e.get("status") == "done"}
    pools = {p: {k: v for k, v in d.items() if k != "weights"} for p, d in run.ensembles.items()}
    dev_eval = run.path / DEV_EVAL_JSON
    return {"cv_families": families, "cv_ensembles": pools, "nested_ranker": ranker_info.get("nested_cv", {}),
            "dev_as_eval": read_json(dev_eval) if dev_eval.is_file() else None}


def graph_parameters(folder: Path, graphs: dict[str, GraphSpec]) -> dict[str, int]:
    """Parameters per graph, for the DCASE meta.yaml's complexity section: elements of every initializer and constant,
    plus the float lists of node attributes (a skl2onnx tree ensemble keeps its thresholds and leaf values there;
    its integer attributes are node ids and structure, not counted). Recorded
    at export so that the torch-free, onnx-free runtime need not parse graphs to report it."""
    import onnx

    counts = {}
    for name, spec in graphs.items():
        model = onnx.load(str(Path(folder) / spec.file), load_external_data=False)
        total = sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in model.graph.initializer)
        for node in model.graph.node:
            for attr in node.attribute:
                total += len(attr.floats)
                if attr.HasField("t"):
                    total += int(np.prod(attr.t.dims)) if len(attr.t.dims) else 1
        counts[name] = total
    return counts


def _manifest(staging: Path, run: Run, policies: list[SystemPolicy], layout: HeadsLayout,
              graphs: dict[str, GraphSpec], clap: ClapGraphs, ranker_info: dict, opts: ExportOptions) -> Manifest:
    return Manifest(
        schema_version=SCHEMA_VERSION,
        bundle_id=f"bst-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        classes=list(CODES),
        text=TextSpec(template_version=TEMPLATE_VERSION, tokenizer_file=clap.tokenizer, max_tokens=MAX_TOKENS,
                      tokenizer_source=str(clap.provenance.get("tokenizer", ""))),
        audio=AudioSpec(sample_rate_hz=rt_audio.SAMPLE_RATE_HZ, clip_samples=rt_audio.CLIP_SAMPLES,
                        chunk_rule=rt_audio.CHUNK_RULE,
                        mel={"n_fft": rt_audio.N_FFT, "hop_samples": rt_audio.HOP_SAMPLES, "mel_bins": rt_audio.MEL_BINS,
                             "f_min_hz": rt_audio.F_MIN_HZ, "f_max_hz": rt_audio.F_MAX_HZ,
                             "chunk_frames": rt_audio.CHUNK_FRAMES}),
        heads=HeadsSpec(families=list(layout.families), pools=list(layout.pools),
                        pool_weights=layout.pool_weights.tolist(), text_only_family=TEXT_ONLY,
                        audio_only_family=AUDIO_ONLY, class_text_embeddings_file=CLASS_TEXT_FILE),
        graphs=graphs,
        files={"tokenizer": _file_spec(staging, clap.tokenizer),
               "class_text_embeddings": _file_spec(staging, CLASS_TEXT_FILE),
               **{key: _file_spec(staging, name) for key, name in clap.weights.items()}},
        systems={str(p.system_id): p.to_dict() for p in policies},
        ranker=ranker_info,
        provenance={
            "packages": package_versions(PROVENANCE_PACKAGES), "git_revision": _git_revision(),
            "run_dir": str(run.path.resolve()),
            "data_fingerprints": run.registry.get("data_fingerprints"), "clap": clap.provenance,
            "scores": _scores(run, ranker_info),
            "graph_parameters": graph_parameters(staging, graphs),
            "override_rates": _override_rates(policies),
        },
        clap_weights="random" if clap.random else "checkpoint",
        portable=portable_section([str(p.system_id) for p in policies],
                                  [i.name for i in graphs["heads"].inputs]),
    )
