"""A stand-in Hugging Face cache so laion-clap can be built with no network access at all.

laion-clap reaches the hub three times: `laion_clap.training.data` loads the bert/roberta/bart tokenizers at
import time, `CLAP.__init__` loads `RobertaModel.from_pretrained('roberta-base')`, and `CLAP_Module.__init__`
loads the roberta tokenizer. Rather than patching laion-clap, we write a folder in the standard hub layout
(`models--<org>--<name>/refs/main` + `snapshots/<rev>/...`) holding:

- small byte-level BPE tokenizers trained with `tokenizers` on a fixed built-in text (never on evaluation data),
  with RoBERTa's special-token ids 0-4, for roberta-base and facebook/bart-base; a WordPiece vocab for bert;
- the real roberta-base `config.json` (written out by hand below), so the architecture is the full-size one;
- a tiny `model.safetensors` with one unrelated tensor: every RoBERTa weight then loads as "missing" and is
  initialised the normal way (random), to be overwritten by a checkpoint or re-seeded by `bst_rt.train.clap`.

`activate()` must run before `transformers` is first imported: huggingface_hub reads HF_HUB_CACHE and
HF_HUB_OFFLINE once, at import.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

#: bumped whenever the files written below change, so an old cache is rebuilt rather than reused
STAND_IN_VERSION = "bst-hf-offline-v1"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "bst-rt" / "hf-offline"
STAND_IN_VOCAB_SIZE = 2000

ROBERTA_BASE_CONFIG: dict = {
    "architectures": ["RobertaForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "roberta",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "type_vocab_size": 1,
    "vocab_size": 50265,
}

_ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _training_text() -> list[str]:
    """A fixed, built-in sample of English about sounds: the taxonomy itself plus a few generic sentences."""
    from bst_rt.runtime.taxonomy import CLASSES, PARENT_NAMES

    lines = [f"{c.name}. {c.description}" for c in CLASSES] + list(PARENT_NAMES.values())
    lines += [
        "A recording of a dog barking in the distance while cars pass on a wet street.",
        "Field recording of birds singing at dawn in a quiet forest, with a light wind in the leaves.",
        "Short one-shot sample: a kick drum, a snare hit, a closed hi-hat and a crash cymbal.",
        "A woman reads a poem aloud; a man answers; people chatter and laugh in a busy cafe.",
        "Synthesizer pad with slow attack, detuned saw lead, deep sub bass and an arpeggio at 120 bpm.",
        "The door creaks open, keys jingle, a drawer slides shut and the kettle starts to whistle.",
        "Thunder rolls over the hills, rain falls on a tin roof, a stream runs over stones, fire crackles.",
        "Guitar, violin, cello, flute, clarinet, saxophone, trumpet, piano, organ, harpsichord, drums.",
        "Glitchy experimental noise, granular textures, whooshes, risers, beeps and interface sounds.",
        "Train station announcement, footsteps, coughing, breathing, clapping, eating, a crowd murmur.",
        "0 1 2 3 4 5 6 7 8 9 10 44.1 kHz 48 kHz 16 bit stereo mono wav flac mp3 ogg loop bpm take.",
    ]
    return lines


def _train_byte_level_bpe() -> "object":
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=STAND_IN_VOCAB_SIZE,
        special_tokens=_ROBERTA_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    return tok


def _write_bpe_files(tok, folder: Path) -> None:
    """vocab.json + merges.txt in the GPT-2/RoBERTa format (what RobertaTokenizer/BartTokenizer read)."""
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    assert [vocab[s] for s in _ROBERTA_SPECIALS] == list(range(5)), "special tokens must hold ids 0-4"
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _write_tiny_safetensors(path: Path) -> None:
    """One small tensor under a name no model uses: from_pretrained then initialises every real weight."""
    header = json.dumps({"bst_stand_in": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00\x00\x00\x00")


def _write_repo(cache: Path, repo_id: str, files: dict[str, bytes | Path]) -> None:
    """One model repo in the hub cache layout; the revision is a content hash, as a real commit id would be."""
    digest = hashlib.sha1(STAND_IN_VERSION.encode())
    for name in sorted(files):
        data = files[name] if isinstance(files[name], bytes) else Path(files[name]).read_bytes()
        digest.update(name.encode() + data)
    rev = digest.hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snap / name).write_bytes(data if isinstance(data, bytes) else Path(data).read_bytes())
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)


def _build(cache: Path) -> None:
    tok = _train_byte_level_bpe()
    with tempfile.TemporaryDirectory() as tmp:
        bpe = Path(tmp)
        _write_bpe_files(tok, bpe)
        weights = bpe / "model.safetensors"
        _write_tiny_safetensors(weights)
        roberta_cfg = json.dumps(ROBERTA_BASE_CONFIG, indent=2).encode()
        _write_repo(cache, "roberta-base", {
            "config.json": roberta_cfg,
            "vocab.json": bpe / "vocab.json",
            "merges.txt": bpe / "merges.txt",
            "model.safetensors": weights,
        })
        bart_cfg = json.dumps({"model_type": "bart", "vocab_size": 50265, "pad_token_id": 1,
                               "bos_token_id": 0, "eos_token_id": 2}).encode()
        _write_repo(cache, "facebook/bart-base", {
            "config.json": bart_cfg,
            "vocab.json": bpe / "vocab.json",
            "merges.txt": bpe / "merges.txt",
        })
        words = sorted({w.lower().strip(".,;:!?()/") for line in _training_text() for w in line.split()} - {""})
        bert_vocab = "\n".join(_BERT_SPECIALS + words) + "\n"
        bert_cfg = json.dumps({"model_type": "bert", "vocab_size": 30522, "do_lower_case": True}).encode()
        _write_repo(cache, "bert-base-uncased", {"config.json": bert_cfg, "vocab.txt": bert_vocab.encode()})
    (cache / "bst-stand-in.json").write_text(json.dumps({"version": STAND_IN_VERSION}))


def ensure_cache(cache_dir: Path | None = None) -> Path:
    """Build the stand-in cache once (atomically: built aside, then renamed) and return its path."""
    cache = Path(cache_dir or os.environ.get("BST_HF_OFFLINE_DIR") or DEFAULT_CACHE_DIR)
    if _is_current(cache):
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        _build(tmp)
        if _is_current(cache):  # another process finished first, and may be reading it: keep theirs
            return cache
        if cache.exists():  # stale (older version or half-deleted): move aside, then drop
            aside = Path(tempfile.mkdtemp(prefix=f".{cache.name}.old.", dir=cache.parent))
            os.replace(cache, aside / "cache")
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(tmp, cache)
        except OSError:  # another process won the race: its cache is as good as ours
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def _is_current(cache: Path) -> bool:
    marker = cache / "bst-stand-in.json"
    try:
        return json.loads(marker.read_text()).get("version") == STAND_IN_VERSION
    except (OSError, ValueError):
        return False


def activate(cache_dir: Path | None = None) -> Path:
    """Point huggingface_hub at the stand-in cache, offline. Must run before transformers is imported."""
    if "transformers" in sys.modules or "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as hub_constants

        wanted = str(ensure_cache(cache_dir))
        if hub_constants.HF_HUB_CACHE != wanted or not hub_constants.HF_HUB_OFFLINE:
            from bst_rt.runtime.errors import BstError

            raise BstError(
                "transformers/huggingface_hub was imported before bst_rt.train.hf_offline.activate(); "
                "laion-clap would try to reach huggingface.co. Import bst_rt.train.clap first."
            )
        return Path(wanted)
    cache = ensure_cache(cache_dir)
    os.environ["HF_HUB_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return cache
