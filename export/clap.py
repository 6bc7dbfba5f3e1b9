"""CLAP fusion encoders -> ONNX (TorchScript exporter, opset 17), tokenizer.json, int8 variants, measured parity.

Two traps shape this module:
- laion's fusion forward branches on "is any clip in the batch longer than 10 s"; traced, the branch is frozen.
  `BranchFreeAudio` always computes the local (3-chunk) branch with the model's own modules and keeps it only
  where `longer` is true (`torch.where`): equal to laion's output, and one graph for every batch.
- HTSAT's `window_reverse` computes the batch with a Python `int(...)`, which tracing freezes: the graph then
  runs at any batch size but is silently wrong at all but the export batch. `_window_reverse_fixed` reshapes
  with -1 instead, patched in for the duration of the export only.
Export fails (BstError) when ORT disagrees with torch beyond the stated tolerance; it never just warns.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bst_rt.runtime.audio import CHUNK_FRAMES, MEL_BINS
from bst_rt.runtime.encoders import (AUDIO_GRAPH, AUDIO_INT8, AUDIO_OUTPUT, EMBEDDING_DIM, TEXT_GRAPH, TEXT_INT8,
                                  TEXT_OUTPUT, TOKENIZER_FILE)
from bst_rt.runtime.errors import BstError
from bst_rt.runtime.int8_format import DEFAULT_INT8_FORMAT, INT8_FORMATS
from bst_rt.runtime.text import MAX_TOKENS

from . import validate as validate_module

if TYPE_CHECKING:
    from laion_clap import CLAP_Module

OPSET = 17
#: bumped whenever the exported graphs compute differently (2: the text graph's last layer for token 0 only), so
#: caches keyed by it (`graph_cache.cache_key`) never hand out graphs of an older version
GRAPHS_VERSION = 2
GRAPH_TOLERANCE = validate_module.TOLERANCES["audio_encoder"]  # max abs diff, normalised embeddings, ORT fp32 vs torch
INT8_MIN_COSINE = validate_module.INT8_MIN_COSINE


def _window_reverse_fixed(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    x = windows.view(-1, H // window_size, W // window_size, window_size, window_size, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, windows.shape[-1])


@contextlib.contextmanager
def _patched_window_reverse(htsat: torch.nn.Module) -> Iterator[None]:
    """Patch the module that really defines HTSAT (laion imports it as `clap_module.htsat`, not via laion_clap)."""
    module = sys.modules[type(htsat).__module__]
    original = module.window_reverse
    module.window_reverse = _window_reverse_fixed
    try:
        yield
    finally:
        module.window_reverse = original


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """The tracer's warnings about Python branches are all known here (the batch-1 duplicate in AFF, shape
    asserts, HF mask helpers) and are checked by the parity measurement instead, so keep the console clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def stretch_taps(t_in: int, t_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HTSAT's time stretch (`interpolate(..., mode="bicubic", align_corners=True)`, t_in -> t_out frames) as 4
    taps a row: indices [t_out, 4] and weights [t_out, 4]. Interpolation is linear in its input, so stretching the
    identity gives the exact map, and 4 Gathers a row cost far less than ORT's generic cubic Resize.
    The identity is float32 on purpose: torch's float32 kernel computes source positions in float32, which moves
    its taps by up to 4e-4 (on unit inputs) from the float64 kernel's; the float32 map matches laion's float32
    forward to 5e-7."""
    eye = torch.eye(t_in, dtype=torch.float32)[None, None]
    dense = F.interpolate(eye, (t_out, t_in), mode="bicubic", align_corners=True)[0, 0]  # [t_out, t_in]
    idx = torch.zeros(t_out, 4, dtype=torch.long)
    weight = torch.zeros(t_out, 4, dtype=torch.float32)
    for row in range(t_out):
        cols = torch.nonzero(dense[row]).flatten()
        if len(cols) > 4:
            raise BstError(f"bicubic stretch row {row} has {len(cols)} taps, expected at most 4")
        idx[row, : len(cols)] = cols
        weight[row, : len(cols)] = dense[row, cols]
    return idx, weight


class BranchFreeAudio(torch.nn.Module):
    """(mel_fusion [B,4,1001,64], longer [B]) -> normalised [B,512], built from laion's own modules."""

    def __init__(self, clap_module: CLAP_Module) -> None:
        super().__init__()
        self.htsat = clap_module.model.audio_branch
        self.projection = clap_module.model.audio_projection
        h = self.htsat
        idx, weight = stretch_taps(CHUNK_FRAMES, int(h.spec_size * h.freq_ratio))
        self.register_buffer("stretch_idx", idx, persistent=False)
        self.register_buffer("stretch_weight", weight, persistent=False)

    def _wav2img(self, x: torch.Tensor) -> torch.Tensor:
        """laion's `reshape_wav2img` with the time stretch as 4 taps (`stretch_taps`); same layout after it."""
        h = self.htsat
        if x.shape[2] != CHUNK_FRAMES or x.shape[3] != h.spec_size // h.freq_ratio:
            return h.reshape_wav2img(x)
        x = sum(x.index_select(2, self.stretch_idx[:, k]) * self.stretch_weight[:, k].view(1, 1, -1, 1)
                for k in range(4))
        x = x.permute(0, 1, 3, 2).contiguous()
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2], h.freq_ratio, x.shape[3] // h.freq_ratio)
        x = x.permute(0, 1, 3, 2, 4).contiguous()
        return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3], x.shape[4])

    def _patch_embed(self, x: torch.Tensor, longer: torch.Tensor) -> torch.Tensor:
        pe = self.htsat.patch_embed
        global_x = pe.proj(x[:, 0:1])
        tw = global_x.size(-1)
        local = x[:, 1:]
        chans, h, w = local.shape[1], local.shape[2], local.shape[3]
        local = pe.mel_conv2d(local.reshape(-1, 1, h, w))
        local = local.view(-1, chans, local.size(1), local.size(2), local.size(3))
        local = local.permute(0, 2, 3, 1, 4).contiguous().flatten(3)
        if local.size(-1) < tw:
            local = F.pad(local, (0, tw - local.size(-1)))
        else:
            local = local[:, :, :, :tw]
        fused = pe.fusion_model(global_x, local)
        x = torch.where(longer.view(-1, 1, 1, 1), fused, global_x)
        if pe.flatten:
            x = x.flatten(2).transpose(1, 2)
        return pe.norm(x)

    def forward(self, mel_fusion: torch.Tensor, longer: torch.Tensor) -> torch.Tensor:
        h = self.htsat
        x = h.bn0(mel_fusion.transpose(1, 3)).transpose(1, 3)
        x = self._wav2img(x)
        frames = x.shape[2]
        x = self._patch_embed(x, longer)
        if h.ape:
            x = x + h.absolute_pos_embed
        x = h.pos_drop(x)
        for layer in h.layers:
            x, _ = layer(x)
        x = h.norm(x)
        c = x.shape[2]
        sf = frames // (2 ** (len(h.depths) - 1)) // h.patch_stride[0]
        st = frames // (2 ** (len(h.depths) - 1)) // h.patch_stride[1]
        x = x.permute(0, 2, 1).contiguous().reshape(-1, c, sf, st)
        c_freq_bin = sf // h.freq_ratio
        x = x.reshape(-1, c, sf // c_freq_bin, c_freq_bin, st)
        x = x.permute(0, 1, 3, 2, 4).contiguous().reshape(-1, c, c_freq_bin, (sf // c_freq_bin) * st)
        latent = torch.flatten(h.avgpool(torch.flatten(x, 2)), 1)
        return F.normalize(self.projection(latent), dim=-1)


class FullTextGraph(torch.nn.Module):
    """(input_ids, attention_mask) -> normalised [B,512] exactly as laion computes it: HF's RobertaModel (all 12
    layers on every token), pooler_output -> text_projection. The torch reference of every text parity check."""

    def __init__(self, clap_module: CLAP_Module) -> None:
        super().__init__()
        self.text_branch = clap_module.model.text_branch
        self.projection = clap_module.model.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_branch(input_ids=input_ids, attention_mask=attention_mask)["pooler_output"]
        return F.normalize(self.projection(pooled), dim=-1)


class TextGraph(FullTextGraph):
    """The exported text graph: FullTextGraph's output, with the last layer computed for token 0 only.

    The pooler reads only `hidden[:, 0]` of the last layer, so there only token 0's query, attention output and
    feed-forward are needed; keys and values still come from every token. Layers 0..10 and the mask are HF's own
    calls; the last layer is written with its own submodules and HF's attention function (the one
    `RobertaSelfAttention` dispatches to), so the maths is the same, row for row."""

    def __init__(self, clap_module: CLAP_Module) -> None:
        super().__init__(clap_module)
        roberta = sys.modules[type(self.text_branch).__module__]
        needed = ("ALL_ATTENTION_FUNCTIONS", "eager_attention_forward")
        if not (all(hasattr(roberta, n) for n in needed) and hasattr(self.text_branch, "_create_attention_masks")):
            import transformers

            raise BstError(f"transformers {transformers.__version__}: its RoBERTa internals are not the ones the "
                           "CLS-only text graph is written against (transformers 5)")
        self._attention_functions, self._eager = roberta.ALL_ATTENTION_FUNCTIONS, roberta.eager_attention_forward

    def _last_layer_token0(self, layer: torch.nn.Module, hidden: torch.Tensor,
                           mask: torch.Tensor | None) -> torch.Tensor:
        """`RobertaLayer.forward` for query position 0: [B, T, H] -> [B, 1, H]."""
        sa = layer.attention.self
        batch, tokens = hidden.shape[0], hidden.shape[1]
        cls = hidden[:, :1]
        query = sa.query(cls).view(batch, 1, -1, sa.attention_head_size).transpose(1, 2)
        key = sa.key(hidden).view(batch, tokens, -1, sa.attention_head_size).transpose(1, 2)
        value = sa.value(hidden).view(batch, tokens, -1, sa.attention_head_size).transpose(1, 2)
        if mask is not None and mask.dim() == 4:  # [B, 1, T, T] (or [B, 1, 1, T]): query row 0
            mask = mask[:, :, :1, :]
        attend = self._attention_functions.get_interface(sa.config._attn_implementation, self._eager)
        context, _ = attend(sa, query, key, value, mask, dropout=0.0, scaling=sa.scaling)
        context = context.reshape(batch, 1, -1).contiguous()
        attention_output = layer.attention.output(context, cls)
        return layer.output(layer.intermediate(attention_output), attention_output)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tb = self.text_branch
        hidden = tb.embeddings(input_ids=input_ids)
        mask, _ = tb._create_attention_masks(attention_mask=attention_mask, encoder_attention_mask=None,
                                             embedding_output=hidden, encoder_hidden_states=None, cache=None)
        *first, last = tb.encoder.layer
        for layer in first:
            hidden = layer(hidden, mask)
        pooled = tb.pooler(self._last_layer_token0(last, hidden, mask))
        return F.normalize(self.projection(pooled), dim=-1)


def random_mel(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """dB-scaled random mel_fusion and alternating `longer` flags: tracing and graph-parity inputs."""
    rng = np.random.default_rng(seed)
    mel = (rng.standard_normal((batch, 4, CHUNK_FRAMES, MEL_BINS)) * 15.0 - 40.0).astype(np.float32)
    return mel, np.arange(batch) % 2 == 0


def export_audio_graph(model: CLAP_Module, path: str | os.PathLike, opset: int = OPSET) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = BranchFreeAudio(model).eval()
    mel, longer = random_mel(2)
    tmp = path.with_name(f".{path.name}.tmp")
    with _patched_window_reverse(wrapper.htsat), torch.no_grad(), _quiet_tracing():
        torch.onnx.export(
            wrapper, (torch.from_numpy(mel), torch.from_numpy(longer)), str(tmp), dynamo=False,
            input_names=["mel_fusion", "longer"], output_names=[AUDIO_OUTPUT], opset_version=opset,
            dynamic_axes={"mel_fusion": {0: "batch"}, "longer": {0: "batch"}, AUDIO_OUTPUT: {0: "batch"}},
        )
    os.replace(tmp, path)
    return path


def export_text_graph(model: CLAP_Module, path: str | os.PathLike, opset: int = OPSET,
                      full_last_layer: bool = False) -> Path:
    """The bundle's text graph (`TextGraph`); `full_last_layer` exports `FullTextGraph` instead, the comparison
    `bench/encoders.py --text-last-layer` times it against."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = (FullTextGraph if full_last_layer else TextGraph)(model).eval()
    ids = torch.tensor([[0, 100, 200, 300, 2], [0, 400, 2, 1, 1]], dtype=torch.int64)
    mask = (ids != 1).long()
    tmp = path.with_name(f".{path.name}.tmp")
    with torch.no_grad(), _quiet_tracing():
        torch.onnx.export(
            wrapper, (ids, mask), str(tmp), dynamo=False,
            input_names=["input_ids", "attention_mask"], output_names=[TEXT_OUTPUT], opset_version=opset,
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                          TEXT_OUTPUT: {0: "batch"}},
        )
    os.replace(tmp, path)
    return path


def save_tokenizer(model_or_dir: CLAP_Module | str | os.PathLike, path: str | os.PathLike) -> Path:
    """tokenizer.json (byte-level BPE, RoBERTa's special tokens, post-processor, truncation 77) from vocab.json +
    merges.txt."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    from bst_rt.runtime.atomic import atomic_write_text

    folder = Path(model_or_dir.bst_provenance.tokenizer_dir if hasattr(model_or_dir, "bst_provenance")
                  else model_or_dir)
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise BstError(f"{folder}: tokenizer folder lacks vocab.json / merges.txt")
    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    # RoBERTa's special tokens, as transformers registers them: a title holding "<s>" or "<mask>" gets their ids,
    # not the BPE pieces of the characters; <mask> swallows the space before it (lstrip), as in roberta-base
    missing = [t for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if tok.token_to_id(t) is None]
    if missing:  # adding them would create ids past the text encoder's embedding table
        raise BstError(f"{vocab}: no {', '.join(missing)} entry; not a RoBERTa vocabulary")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<s>", "<pad>", "</s>", "<unk>")]
                           + [AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
        trim_offsets=True, add_prefix_space=False)
    tok.enable_truncation(MAX_TOKENS)
    path = Path(path)
    atomic_write_text(path, tok.to_str())
    return path


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, int8_format: str = DEFAULT_INT8_FORMAT,
                  op_types: Sequence[str] | None = None) -> Path:
    """Dynamic int8 (weights quantised here, activations as uint8 at run time) in one of
    `bst_rt.runtime.int8_format.INT8_FORMATS`. `op_types` None quantises onnxruntime's default set (MatMul,
    Gather, ...).

    The default, int8 weights in 7 bits per output channel, cannot saturate onnxruntime's 16-bit pair sums on any
    x86 CPU (full-range int8 weights do on AVX2 without VNNI) and runs at U8S8 speed where VNNI/AMX exist; per
    channel keeps the audio tower's cosine (per tensor loses much of it). A bundle runs on CPUs its exporter never
    saw, so the format must not depend on the deploying CPU's extensions; `bench/predict.py` prints every format's
    speed and agreement on the machine at hand, and the cosines each export reaches go into clap_parity.json."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fmt = INT8_FORMATS.get(int8_format)
    if fmt is None:
        raise BstError(f"unknown int8 format {int8_format!r}: choose one of {', '.join(INT8_FORMATS)}")
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is for static quantisation
    try:
        quantize_dynamic(str(src), str(tmp), per_channel=fmt.per_channel, reduce_range=fmt.reduce_range,
                         weight_type=QuantType.QUInt8 if fmt.weights == "uint8" else QuantType.QInt8,
                         op_types_to_quantize=list(op_types) if op_types else None)
    finally:
        root.setLevel(level)
    os.replace(tmp, dst)
    return dst


#: the audio tower's convolutions stay fp32: only its MatMul/Gemm (Swin blocks, projection) become int8
AUDIO_INT8_OPS = ("MatMul", "Gemm")


def measure_parity(model: CLAP_Module, graph_dir: str | os.PathLike, texts: Sequence[str], batch: int = 3) -> dict:
    """Measured numbers for the bundle manifest: fp32 max abs diff vs torch, int8 min cosine vs fp32."""
    from bst_rt.runtime.tokenizer import Tokenizer

    graph_dir = Path(graph_dir)
    mel, longer = random_mel(batch, seed=1)
    ids, mask = Tokenizer.from_file(graph_dir / TOKENIZER_FILE).encode_batch(texts)
    with torch.no_grad():
        ref_audio = BranchFreeAudio(model).eval()(torch.from_numpy(mel), torch.from_numpy(longer)).numpy()
        ref_text = FullTextGraph(model).eval()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    feeds_a, feeds_t = {"mel_fusion": mel, "longer": longer}, {"input_ids": ids, "attention_mask": mask}
    out: dict = {"tolerance_max_abs_diff": GRAPH_TOLERANCE, "int8_min_cosine_required": INT8_MIN_COSINE}
    audio32 = validate_module.run_graph(graph_dir / AUDIO_GRAPH, feeds_a)[AUDIO_OUTPUT]
    text32 = validate_module.run_graph(graph_dir / TEXT_GRAPH, feeds_t)[TEXT_OUTPUT]
    out["audio_fp32_max_abs_diff"] = validate_module.max_abs_diff(audio32, ref_audio)
    out["text_fp32_max_abs_diff"] = validate_module.max_abs_diff(text32, ref_text)
    out.update(measure_int8_cosines(graph_dir, texts, batch, (audio32, text32)))
    return out


def measure_int8_cosines(graph_dir: str | os.PathLike, texts: Sequence[str], batch: int = 3,
                         fp32: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Min row cosine of each int8 graph present to the fp32 graph beside it, on measure_parity's inputs."""
    from bst_rt.runtime.tokenizer import Tokenizer

    graph_dir = Path(graph_dir)
    mel, longer = random_mel(batch, seed=1)
    ids, mask = Tokenizer.from_file(graph_dir / TOKENIZER_FILE).encode_batch(texts)
    feeds_a, feeds_t = {"mel_fusion": mel, "longer": longer}, {"input_ids": ids, "attention_mask": mask}
    if fp32 is None:
        fp32 = (validate_module.run_graph(graph_dir / AUDIO_GRAPH, feeds_a)[AUDIO_OUTPUT],
                validate_module.run_graph(graph_dir / TEXT_GRAPH, feeds_t)[TEXT_OUTPUT])
    out = {}
    if (graph_dir / AUDIO_INT8).is_file():
        audio8 = validate_module.run_graph(graph_dir / AUDIO_INT8, feeds_a)[AUDIO_OUTPUT]
        out["audio_int8_min_cosine"] = validate_module.cosine_agreement(audio8, fp32[0])
    if (graph_dir / TEXT_INT8).is_file():
        text8 = validate_module.run_graph(graph_dir / TEXT_INT8, feeds_t)[TEXT_OUTPUT]
        out["text_int8_min_cosine"] = validate_module.cosine_agreement(text8, fp32[1])
    return out


def check_parity(numbers: dict) -> None:
    """Raise when a measured number breaks its tolerance: an export over tolerance is a failed export."""
    validate_module.check_limits("CLAP export", numbers,
                     {"audio_fp32_max_abs_diff": validate_module.TOLERANCES["audio_encoder"],
                      "text_fp32_max_abs_diff": validate_module.TOLERANCES["text_encoder"]},
                     {"audio_int8_min_cosine": INT8_MIN_COSINE, "text_int8_min_cosine": INT8_MIN_COSINE})


PARITY_TEXTS = ("a dog barks twice in a small room", "Solo piano. piano classical. A slow waltz in A minor.",
                "rain on a tin roof with distant thunder", "")


def quantize_clap_int8(src_dir: str | os.PathLike, dst_dir: str | os.PathLike,
                       int8_format: str = DEFAULT_INT8_FORMAT) -> None:
    """Both int8 graphs of a CLAP graph folder (or bundle) from its fp32 ones, in `int8_format`."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    quantize_int8(src_dir / AUDIO_GRAPH, dst_dir / AUDIO_INT8, int8_format, op_types=AUDIO_INT8_OPS)
    quantize_int8(src_dir / TEXT_GRAPH, dst_dir / TEXT_INT8, int8_format)


def quantize_clap_int8_from_copies(src_dir: str | os.PathLike, dst_dir: str | os.PathLike,
                                   int8_format: str = DEFAULT_INT8_FORMAT) -> None:
    """`quantize_clap_int8` from plain copies of `src_dir`'s fp32 graphs: onnx refuses to read external weights
    (`.data`) with more than one hard link, which a bundle whose graphs are hard-linked into a graph cache has."""
    import shutil

    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    copies = dst_dir / ".fp32-source"
    shutil.rmtree(copies, ignore_errors=True)
    copies.mkdir(parents=True)
    try:
        for f in src_dir.iterdir():
            if f.name.startswith((AUDIO_GRAPH, TEXT_GRAPH)):
                shutil.copy2(f, copies / f.name)
        quantize_clap_int8(copies, dst_dir, int8_format)
    finally:
        shutil.rmtree(copies, ignore_errors=True)


def export_clap(model: CLAP_Module, out_dir: str | os.PathLike, *, int8: bool = True,
                int8_format: str = DEFAULT_INT8_FORMAT) -> dict:
    """Audio + text graphs, tokenizer.json, int8 variants and `clap_parity.json`; returns the parity numbers."""
    from bst_rt.runtime.atomic import atomic_write_text

    out_dir = Path(out_dir)
    export_audio_graph(model, out_dir / AUDIO_GRAPH)
    export_text_graph(model, out_dir / TEXT_GRAPH)
    save_tokenizer(model, out_dir / TOKENIZER_FILE)
    if int8:
        quantize_clap_int8(out_dir, out_dir, int8_format)
    numbers = measure_parity(model, out_dir, PARITY_TEXTS)
    if int8:
        numbers["int8_format"] = int8_format
    numbers["embedding_dim"] = EMBEDDING_DIM
    numbers["provenance"] = model.bst_provenance.to_dict()
    atomic_write_text(out_dir / "clap_parity.json", json.dumps(numbers, indent=2))
    check_parity(numbers)
    return numbers
