"""Offline LAION-CLAP (fusion, HTSAT-tiny + RoBERTa) and the torch reference embedders every parity test trusts.

Importing this module activates the stand-in Hugging Face cache (`bst_rt.train.hf_offline`) before transformers
is imported, so nothing here ever reaches huggingface.co. The reference embedders call laion-clap's own
`get_audio_embedding_from_data` / `get_text_embedding` (its own torchaudio mel and torchvision shrink), with
only its random chunk choice replaced by `bst_rt.runtime.audio.CHUNK_RULE`.
"""
from __future__ import annotations

import contextlib
import hashlib
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from . import hf_offline

hf_offline.activate()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bst_rt.runtime.audio import CHUNK_RULE  # noqa: E402
from bst_rt.runtime.hashing import file_sha256  # noqa: E402
from bst_rt.runtime.errors import BstError  # noqa: E402

RANDOM_WEIGHTS_WARNING = (
    "CLAP built at SEEDED RANDOM WEIGHTS (--random-weights): embeddings and every prediction made from them are "
    "MEANINGLESS. Use --clap-ckpt 630k-audioset-fusion-best.pt for a real system."
)


@dataclass(frozen=True)
class ClapProvenance:
    """What a bundle must record about the encoder it was exported from."""

    weights: str  # "checkpoint" | "random"
    checkpoint_sha256: str | None
    seed: int | None
    tokenizer: str  # "roberta-base" (real files) | "stand-in-bpe" (trained with `tokenizers`, see hf_offline)
    tokenizer_dir: str
    tokenizer_sha256: str  # of vocab.json + merges.txt: the ids every text embedding depends on
    chunk_rule: str = CHUNK_RULE

    def to_dict(self) -> dict:
        return {**asdict(self), "random_weights": self.weights == "random"}




def _tokenizer_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("vocab.json", "merges.txt"):
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def _roberta_tokenizer_dir(tokenizer_dir: Path | None) -> tuple[Path, str]:
    if tokenizer_dir is not None:
        tokenizer_dir = Path(tokenizer_dir)
        if not ((tokenizer_dir / "vocab.json").is_file() and (tokenizer_dir / "merges.txt").is_file()):
            raise BstError(f"{tokenizer_dir}: a RoBERTa tokenizer folder needs vocab.json and merges.txt")
        return tokenizer_dir, "roberta-base"
    repo = hf_offline.ensure_cache() / "models--roberta-base"
    return repo / "snapshots" / (repo / "refs" / "main").read_text().strip(), "stand-in-bpe"


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every weight and batch-norm statistic from `seed`, so random models differ from identity BN."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                n = module.running_mean.shape[0]
                if name.endswith("bn0"):  # sees dB-scale mel: realistic statistics keep activations sane
                    module.running_mean.copy_(torch.empty(n).uniform_(-60.0, -20.0, generator=gen))
                    module.running_var.copy_(torch.empty(n).uniform_(100.0, 600.0, generator=gen))
                else:
                    module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                    module.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=gen))
                if module.weight is not None:
                    module.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=gen))
                    module.bias.copy_(0.1 * torch.randn(n, generator=gen))


def _read_checkpoint(ckpt: Path) -> dict:
    """The model state of a laion-clap checkpoint, read (tensors only) before any model is built."""
    if not ckpt.is_file():
        raise BstError(f"{ckpt}: CLAP checkpoint not found")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BstError(f"{ckpt}: cannot read as a torch checkpoint ({exc})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise BstError(f"{ckpt}: no state_dict in this checkpoint")
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    state.pop("text_branch.embeddings.position_ids", None)  # laion-clap's known checkpoint quirk
    return state


def _load_state(model: torch.nn.Module, state: dict, ckpt: Path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BstError(f"{ckpt}: not a CLAP fusion checkpoint (missing {list(missing)[:3]}, "
                       f"unexpected {list(unexpected)[:3]})")


def load_clap(ckpt: Path | None, *, random_weights: bool = False, seed: int = 0,
              tokenizer_dir: Path | None = None):
    """`CLAP_Module(enable_fusion=True)` in eval mode on CPU, offline; provenance in `.bst_provenance`."""
    if (ckpt is None) == (not random_weights):
        raise BstError("give exactly one of --clap-ckpt PATH or --random-weights")
    state = _read_checkpoint(Path(ckpt)) if ckpt is not None else None
    import laion_clap
    from transformers import RobertaTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the "Loading weights" bar of the (deliberately) empty stand-in weights

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        module = laion_clap.CLAP_Module(enable_fusion=True, device="cpu")
    tok_dir, tok_kind = _roberta_tokenizer_dir(tokenizer_dir)
    module.tokenize = RobertaTokenizer.from_pretrained(str(tok_dir))
    if state is not None:
        _load_state(module.model, state, Path(ckpt))
        del state
        sha = file_sha256(Path(ckpt))
    else:
        _randomise(module.model, seed)
        warnings.warn(RANDOM_WEIGHTS_WARNING, RuntimeWarning, stacklevel=2)
        sha = None
    module.eval()
    module.bst_provenance = ClapProvenance(
        weights="checkpoint" if ckpt is not None else "random", checkpoint_sha256=sha,
        seed=None if ckpt is not None else seed, tokenizer=tok_kind, tokenizer_dir=str(tok_dir),
        tokenizer_sha256=_tokenizer_sha256(tok_dir))
    return module


class _CentreOfThirds:
    """Stands in for `numpy.random` inside laion's data module: `choice` takes the middle element (CHUNK_RULE)."""

    def __getattr__(self, name: str):
        return getattr(np.random, name)

    @staticmethod
    def choice(a):  # noqa: ANN001, ANN205 - numpy's signature
        a = list(a)
        return a[len(a) // 2]


class _NumpyWithFixedChoice:
    random = _CentreOfThirds()

    def __getattr__(self, name: str):
        return getattr(np, name)


@contextlib.contextmanager
def fixed_chunk_rule() -> Iterator[None]:
    """laion-clap's `get_audio_features` with its random chunk starts replaced by the deterministic rule."""
    from laion_clap.training import data as laion_data

    original = laion_data.np
    laion_data.np = _NumpyWithFixedChoice()
    try:
        yield
    finally:
        laion_data.np = original


def reference_audio_embedding(model, waveforms: Sequence[np.ndarray]) -> np.ndarray:
    """[B, 512] from laion-clap's own pipeline on 48 kHz mono waveforms (it quantises them itself)."""
    waves = [np.asarray(w, dtype=np.float32) for w in waveforms]
    with fixed_chunk_rule(), torch.no_grad():
        return model.get_audio_embedding_from_data(waves).astype(np.float32)


def reference_audio_embedding_from_files(model, paths: Sequence[str | Path]) -> np.ndarray:
    """[B, 512] from laion-clap's own file pipeline (librosa decode + resample, quantise, features, model)."""
    with fixed_chunk_rule(), torch.no_grad():
        return model.get_audio_embedding_from_filelist([str(p) for p in paths]).astype(np.float32)


def reference_text_embedding(model, texts: Sequence[str]) -> np.ndarray:
    """[B, 512] from laion-clap's own `get_text_embedding` (its tokenizer, padded to 77)."""
    with torch.no_grad():
        return model.get_text_embedding(list(texts)).astype(np.float32)


__all__ = ["ClapProvenance", "RANDOM_WEIGHTS_WARNING", "fixed_chunk_rule", "load_clap",
           "reference_audio_embedding", "reference_audio_embedding_from_files", "reference_text_embedding"]
