"""THE metadata text template: the one string the CLAP text encoder sees for (title, tags, description).

Training (`bst-train embed`) and the runtime both call `metadata_text`, so the two can never drift. The official template is
not published; this is the one a participating team documented: title, then tags with commas as spaces, then the
description with HTML stripped and whitespace collapsed, joined with ". ". Empty parts are skipped (no ". . ").
`TEMPLATE_VERSION` is recorded in every bundle; change it whenever the output of these functions changes.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from .taxonomy import CLASSES

TEMPLATE_VERSION = "bst-text-v2"  # v2: entities decoded once ("&amp;amp;" -> "&amp;")
MAX_TOKENS = 77

_WS = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs) -> None:  # noqa: ANN001 - HTMLParser's signature
        if tag in {"br", "p", "div", "li", "tr"}:
            self.parts.append(" ")

    handle_startendtag = handle_starttag


def _clean(value: object) -> str:
    """None/NaN-like values become '', everything else a str with whitespace collapsed."""
    if value is None:
        return ""
    text = str(value)
    if text.lower() == "nan":
        return ""
    return _WS.sub(" ", text).strip()


def strip_html(text: str) -> str:
    """Visible text of an HTML fragment, entities decoded, whitespace collapsed."""
    parser = _TextExtractor()
    try:
        parser.feed(text)
        parser.close()
        out = "".join(parser.parts)  # entities already decoded once (convert_charrefs); never decode twice
    except Exception:  # malformed markup: fall back to a regex strip rather than fail an item
        out = html.unescape(re.sub(r"<[^>]*>", " ", text))
    return _WS.sub(" ", out).strip()


def metadata_text(title: object, tags: object, description: object) -> str:
    """The string the text encoder sees: 'title. tag1 tag2. description' (empty parts skipped)."""
    parts = [
        _clean(title),
        _clean(_clean(tags).replace(",", " ")),
        strip_html(_clean(description)),
    ]
    return ". ".join(p for p in parts if p)


def _class_words() -> frozenset[str]:
    stop = {"and", "other", "or", "of", "the", "a"}
    words: set[str] = set()
    for c in CLASSES:
        for w in _WORD.findall(c.name.lower()):
            if w in stop or len(w) < 3:
                continue
            words.add(w)
            words.add(w[:-1] if w.endswith("s") else w + "s")
    return frozenset(words)


#: words of the 23 class names (with simple singular/plural forms) removed by `mask_class_words`
CLASS_WORDS: frozenset[str] = _class_words()


def mask_class_words(text: str) -> str:
    """The metadata text with class-name words removed: input of the class-word-masked text embedding.

    Guards a family against the shortcut of reading the label off words like 'piano' or 'vehicles'.
    """
    kept = [tok for tok in text.split(" ") if tok.lower().strip(".,;:!?()\"'") not in CLASS_WORDS]
    return _WS.sub(" ", " ".join(kept)).strip()
