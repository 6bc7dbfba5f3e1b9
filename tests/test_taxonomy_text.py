"""The class table against the task reference, the text template and class-word masking."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bst_rt.runtime import taxonomy
from bst_rt.runtime.taxonomy import CLASSES, CODE_TO_INDEX, CODES, NUM_CLASSES, PARENTS, parent_mass, parent_of, same_parent
from bst_rt.runtime.text import CLASS_WORDS, mask_class_words, metadata_text, strip_html

REFERENCE = Path("/work/shared/reference/dcase2026-task1.md")
# The reference's §1 table, as published (index, code, name), for when the reference file is not on this machine.
PUBLISHED = """0 m-sp Solo percussion|1 m-si Solo instrument|2 m-m Multiple instruments|3 is-p Percussion|4 is-s String|
5 is-w Wind|6 is-k Piano / Keyboard instruments|7 is-e Synths / Electronic|8 sp-s Solo speech|9 sp-c Conversation / Crowd|
10 sp-p Processed / Synthetic|11 fx-o Objects / House appliances|12 fx-v Vehicles|
13 fx-m Other mechanisms, engines, machines|14 fx-h Human sounds and actions|15 fx-a Animals|
16 fx-n Natural elements and explosions|17 fx-ex Experimental|18 fx-el Electronic / Design|19 ss-n Nature|
20 ss-i Indoors|21 ss-u Urban|22 ss-s Synthetic / Artificial"""


def _reference_table() -> dict[int, tuple[str, str]]:
    if REFERENCE.is_file():
        text = REFERENCE.read_text(encoding="utf-8")
        cells = re.findall(r"\|\s*(\d+)\s*\|\s*([a-z]+-[a-z]+)\s*\|\s*([^|]+?)\s*(?=\|)", text)
        table = {int(i): (code, name) for i, code, name in cells}
        if len(table) == NUM_CLASSES:
            return table
    entries = [e.strip().split(" ", 2) for e in PUBLISHED.replace("\n", "").split("|")]
    return {int(i): (code, name) for i, code, name in entries}


def test_class_table_matches_the_reference_order_codes_and_names() -> None:
    table = _reference_table()
    assert NUM_CLASSES == 23 and len(set(CODES)) == 23
    assert [(c.code, c.name) for c in CLASSES] == [table[i] for i in range(23)]
    assert all(CODE_TO_INDEX[c.code] == c.index == i for i, c in enumerate(CLASSES))


def test_parents_and_their_children() -> None:
    assert PARENTS == ("m", "is", "sp", "fx", "ss")
    children = {p: [c for c in CODES if parent_of(c) == p] for p in PARENTS}
    assert [len(children[p]) for p in PARENTS] == [3, 5, 3, 8, 4]
    assert parent_of("fx-el") == "fx" and taxonomy.OTHER_CODES == {f"{p}-other" for p in PARENTS}
    assert same_parent(CODE_TO_INDEX["fx-a"], CODE_TO_INDEX["fx-v"])
    assert not same_parent(CODE_TO_INDEX["m-sp"], CODE_TO_INDEX["is-p"])
    for bad in ("fx-other", "fx-d", "fx", ""):
        with pytest.raises(KeyError):
            parent_of(bad)


def test_parent_mass_sums_children() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(23), size=(4, 3)).astype(np.float32)
    mass = parent_mass(probs)
    assert mass.shape == (4, 3, 5) and mass.dtype == np.float32
    for k, p in enumerate(PARENTS):
        cols = [i for i, c in enumerate(CODES) if parent_of(c) == p]
        np.testing.assert_allclose(mass[..., k], probs[..., cols].sum(-1), rtol=1e-6)
    np.testing.assert_allclose(mass.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("title", "tags", "description", "expected"),
    [
        ("Dog bark", "dog,bark,animal", "A dog barks twice.", "Dog bark. dog bark animal. A dog barks twice."),
        ("  Rain  ", " rain , water,,storm ", "<p>Heavy&nbsp;rain</p>\n<br/>on a   <b>roof</b>",
         "Rain. rain water storm. Heavy rain on a roof"),
        ("Beep", "", "", "Beep"),
        ("", "synth,pad", None, "synth pad"),
        (None, float("nan"), "only <i>text</i>", "only text"),
        ("Café ☕", "ñandú", "AT&amp;T &amp;copy", "Café ☕. ñandú. AT&T &copy"),
        ("", "", "", ""),
    ],
)
def test_metadata_text_template(title, tags, description, expected: str) -> None:
    assert metadata_text(title, tags, description) == expected


def test_strip_html_keeps_text_that_only_looks_like_markup() -> None:
    assert strip_html("5 < 7 and 9 > 3") == "5 < 7 and 9 > 3"
    assert strip_html("&lt;b&gt; is a tag") == "<b> is a tag"
    assert strip_html("line<br>break<li>item") == "line break item"


printable = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)


@settings(max_examples=80, deadline=None)
@given(printable, printable, printable)
def test_template_output_is_clean_and_masking_is_idempotent(title: str, tags: str, description: str) -> None:
    text = metadata_text(title, tags, description)
    assert text == text.strip() and "  " not in text and "\n" not in text
    if not title.strip() and not tags.replace(",", "").strip():
        collapsed = " ".join(description.split())
        assert text == ("" if collapsed.lower() == "nan" else strip_html(collapsed))  # 'nan' cells are empty
    masked = mask_class_words(text)
    assert mask_class_words(masked) == masked
    assert not any(tok.lower().strip(".,;:!?()\"'") in CLASS_WORDS for tok in masked.split())


def test_mask_removes_class_name_words_in_any_case_and_number() -> None:
    text = metadata_text("Solo Piano C4", "piano,keyboards,grand", "A vehicle passes; two Vehicles. Nice room.")
    assert mask_class_words(text) == "C4. grand. A passes; two Nice room."
    assert {"piano", "pianos", "vehicle", "vehicles", "keyboard", "speech"} <= CLASS_WORDS
    assert "the" not in CLASS_WORDS and "other" not in CLASS_WORDS
