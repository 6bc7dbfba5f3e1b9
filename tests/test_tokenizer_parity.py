"""The exported tokenizer.json against transformers on the real roberta-base files (../shared/reference/roberta-base):
identical ids for real-looking Freesound metadata and for titles that contain RoBERTa's special tokens.

The reference is `AutoTokenizer.from_pretrained(folder)` on a folder laid out as the model hub's roberta-base
(vocab.json, merges.txt, config.json, and the tokenizer_config.json entry that makes `<mask>` lstrip, as the hub's
tokenizer.json does). transformers 5's `RobertaTokenizer(vocab_file=..., merges_file=...)` ignores those files and
builds a 5-token vocabulary, so a reference built that way would check nothing.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bst_rt.runtime.text import MAX_TOKENS, metadata_text

ROBERTA = next((p for p in (Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "roberta-base",
                            Path("/work/shared/reference/roberta-base")) if (p / "vocab.json").is_file()), None)
pytestmark = pytest.mark.skipif(ROBERTA is None, reason="the real roberta-base files are not in ../shared/reference")

SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 50264}
#: transformers' own documented examples (PROVENANCE.md beside the files)
DOCUMENTED = {"Hello world": [0, 31414, 232, 2], " Hello world": [0, 20920, 232, 2],
              "A, <mask> AllenNLP sentence.": [0, 250, 6, 50264, 3823, 487, 21992, 3645, 4, 2]}
TITLES_WITH_SPECIALS = [
    "Kick <s> drum", "loop </s> 120bpm", "<pad>", "field recording <unk> café", "A, <mask> AllenNLP sentence.",
    "x<mask>y", "two  <mask>  spaces", "<s><s></s>", "<S> not special", "</s", "<mask", "mask>", "<<s>>",
]
FREESOUND = [
    ("Dog barking in the distance.wav", "dog,bark,animal,field-recording,zoom-h4n",
     "Recorded at 6am in a <b>suburban</b> garden &amp; park. 48kHz/24bit, no processing."),
    ("Rain on tin roof 01", "rain,roof,weather,ambience,stereo",
     "Heavy rain on a corrugated tin roof.\nMic: Rode NT4 (XY)\r\nLength: 3'20\"."),
    ("SYNTH_PAD_Cmaj7_120bpm", "synth,pad,electronic,loop,ambient", ""),
    ("Zug fährt vorbei – Bahnhof Köln", "zug,bahn,train,verkehr", "Ein ICE fährt durch den Bahnhof. 🚆 Sehr laut!"),
    ("", "", ""),
    ("Long description", "long,text", " ".join(["word"] * 400)),
    ("Emoji & symbols ♪♫", "music,notes", "Tabs\there, NBSP\u00a0here, zero-width\u200bjoiner, ½ ¾ ©"),
    ("街の音 (Tokyo street)", "city,urban,japan", "人の声と車の音。"),
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("roberta-base")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy2(ROBERTA / name, folder / name)
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "RobertaTokenizer",
        "mask_token": {"__type": "AddedToken", "content": "<mask>", "lstrip": True, "rstrip": False,
                       "normalized": False, "special": True}}))
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert len(tok) == 50265  # the real vocabulary, not a 5-token stand-in
    return tok


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from bst_rt.export.clap import save_tokenizer

    return save_tokenizer(ROBERTA, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _ours(path: Path, texts: list[str]) -> list[list[int]]:
    from bst_rt.runtime.tokenizer import Tokenizer

    ids, mask = Tokenizer.from_file(path).encode_batch(texts)
    return [row[m.astype(bool)].tolist() for row, m in zip(ids, mask)]


def test_the_exported_tokenizer_registers_robertas_special_tokens(exported: Path) -> None:
    added = {t["content"]: t for t in json.loads(exported.read_text(encoding="utf-8"))["added_tokens"]}
    assert {k: v["id"] for k, v in added.items()} == SPECIALS
    assert all(t["special"] for t in added.values())
    assert added["<mask>"]["lstrip"] and not any(added[t]["lstrip"] for t in SPECIALS if t != "<mask>")


def test_documented_examples(exported: Path, reference) -> None:
    texts = list(DOCUMENTED)
    assert _ours(exported, texts) == list(DOCUMENTED.values())
    assert [reference(t)["input_ids"] for t in texts] == list(DOCUMENTED.values())


def test_titles_with_special_tokens_match_transformers(exported: Path, reference) -> None:
    ours = _ours(exported, TITLES_WITH_SPECIALS)
    for text, got in zip(TITLES_WITH_SPECIALS, ours):
        assert got == reference(text)["input_ids"], text
    assert SPECIALS["<s>"] in ours[0][1:-1]  # "Kick <s> drum": one id inside, not the BPE pieces of "<s>"


def test_freesound_metadata_matches_transformers_with_truncation(exported: Path, reference) -> None:
    texts = [metadata_text(*row) for row in FREESOUND] + [metadata_text(t, "special", "tokens") for t in
                                                           TITLES_WITH_SPECIALS]
    ours = _ours(exported, texts)
    want = [reference(t, truncation=True, max_length=MAX_TOKENS)["input_ids"] for t in texts]
    mismatched = [t for t, a, b in zip(texts, ours, want) if a != b]
    print(f"{len(texts)} texts, {len(mismatched)} mismatched; longest {max(map(len, ours))} tokens")
    assert not mismatched
    assert max(map(len, ours)) == MAX_TOKENS and np.all([o[-1] == SPECIALS["</s>"] for o in ours])
