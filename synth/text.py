"""Freesound-like metadata for the synthetic corpus: titles, tags, descriptions, uploaders, licences, class_idx.

Text carries class-indicative words mixed with distractors; some items carry a misleading word of another class
(mostly a sibling), some have no indicative word at all, some fields are empty, some descriptions are HTML and some
text is non-ASCII (accents, CJK, emoji) — the cases a text encoder meets in BSD10k, BSD35k-CS and the evaluation set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bst_rt.runtime.taxonomy import CLASSES, CODES, PARENTS

#: class-indicative words; siblings share a few (guitar, note, ambience) as real metadata does
VOCAB: dict[str, tuple[str, ...]] = {
    "m-sp": ("drum", "drums", "beat", "groove", "loop", "rhythm", "drumkit", "breakbeat", "bpm", "tabla", "cajon"),
    "m-si": ("solo", "guitar", "piano", "violin", "flute", "melody", "improvisation", "acoustic", "piece", "tune"),
    "m-m": ("band", "song", "orchestra", "ensemble", "mix", "track", "jam", "music", "instrumental", "chorus"),
    "is-p": ("kick", "snare", "hihat", "cymbal", "clap", "hit", "oneshot", "tom", "rimshot", "crash", "percussion"),
    "is-s": ("string", "guitar", "violin", "cello", "pluck", "bass", "pizzicato", "bowed", "note", "harp", "ukulele"),
    "is-w": ("flute", "clarinet", "saxophone", "trumpet", "horn", "wind", "brass", "oboe", "trombone", "note", "reed"),
    "is-k": ("piano", "keyboard", "organ", "harpsichord", "chord", "keys", "note", "grand", "upright", "rhodes"),
    "is-e": ("synth", "synthesizer", "lead", "pad", "bass", "arpeggio", "analog", "oscillator", "electronic", "patch"),
    "sp-s": ("voice", "speech", "narration", "spoken", "reading", "word", "man", "woman", "says", "voiceover"),
    "sp-c": ("conversation", "crowd", "people", "chatter", "talking", "murmur", "dialogue", "voices", "walla", "party"),
    "sp-p": ("robot", "robotic", "vocoder", "tts", "synthetic", "processed", "distorted", "voice", "computer", "alien"),
    "fx-o": ("door", "keys", "dishes", "switch", "drawer", "cup", "glass", "plate", "handle", "zipper", "object"),
    "fx-v": ("car", "train", "motorcycle", "airplane", "truck", "bus", "passing", "traffic", "engine", "vehicle"),
    "fx-m": ("machine", "motor", "engine", "fan", "gear", "drill", "mechanism", "industrial", "compressor", "pump"),
    "fx-h": ("footsteps", "breathing", "cough", "laugh", "clapping", "eating", "sneeze", "walking", "chewing", "sigh"),
    "fx-a": ("bird", "dog", "cat", "insect", "cow", "bark", "meow", "chirp", "animal", "frog", "rooster"),
    "fx-n": ("wind", "water", "fire", "thunder", "rain", "explosion", "splash", "crackle", "blast", "storm"),
    "fx-ex": ("experimental", "abstract", "noise", "glitch", "texture", "weird", "granular", "manipulated", "circuit"),
    "fx-el": ("whoosh", "riser", "beep", "ui", "scifi", "laser", "sweep", "notification", "interface", "zap", "blip"),
    "ss-n": ("forest", "ambience", "birdsong", "nature", "stream", "ocean", "waves", "river", "meadow", "countryside"),
    "ss-i": ("room", "tone", "office", "restaurant", "kitchen", "hall", "indoor", "interior", "cafe", "ambience"),
    "ss-u": ("street", "city", "urban", "traffic", "market", "construction", "station", "downtown", "ambience"),
    "ss-s": ("drone", "ambient", "atmosphere", "soundscape", "generated", "texture", "artificial", "evolving", "dark"),
}
#: words for `*-other` rows: parent-level only
PARENT_VOCAB: dict[str, tuple[str, ...]] = {
    "m": ("music", "musical", "tune"), "is": ("instrument", "sample", "note"), "sp": ("voice", "vocal", "human"),
    "fx": ("sound", "effect", "sfx"), "ss": ("ambience", "atmosphere", "background"),
}
DISTRACTORS: tuple[str, ...] = (
    "recorded", "recording", "sound", "sample", "free", "stereo", "mono", "zoom", "field", "wav", "test", "my", "new",
    "edit", "short", "long", "take", "version", "mic", "close", "distant", "loud", "quiet", "soft", "hard", "raw",
    "clean", "high", "low", "quality", "sounds", "cool", "nice", "old", "studio", "home", "project", "pack", "one",
)
DEVICES = ("Zoom H4n", "Tascam DR-40", "an iPhone", "a Rode NT1", "a contact mic", "two AKG C414", "a Sony PCM-D100")
PLACES = ("at home", "in my studio", "outside", "in Barcelona", "in the garage", "at night", "in a small room")
ACCENTED = ("grabación", "café", "Geräusch", "naïve", "señal", "été", "lüftung")
CJK = ("録音", "雨の音", "音效", "소리", "環境音")
EMOJI = ("🎵", "🔊", "🐦", "🚗", "🎹")
LICENSES = (
    "http://creativecommons.org/publicdomain/zero/1.0/",
    "https://creativecommons.org/licenses/by/4.0/",
    "http://creativecommons.org/licenses/by/3.0/",
    "http://creativecommons.org/licenses/by-nc/3.0/",
    "https://creativecommons.org/licenses/by-nc/4.0/",
)
MISLEADING_RATE = 0.10


@dataclass(frozen=True)
class Metadata:
    title: str
    tags: str
    description: str


def class_idx(code: str) -> int:
    """BSD10k v1.2 3-digit code: parent digit (m=1, is=2, sp=3, fx=4, ss=5) * 100 + child number; x99 = other."""
    parent = code.split("-", 1)[0]
    base = (PARENTS.index(parent) + 1) * 100
    if code == f"{parent}-other":
        return base + 99
    siblings = [c for c in CODES if c.split("-", 1)[0] == parent]
    return base + siblings.index(code) + 1


def class_examples(description: str) -> str:
    """The examples part of a taxonomy description (the list after the colon)."""
    return description.split(":", 1)[1].strip().rstrip(".") if ":" in description else ""


def description_rows() -> list[dict[str, str]]:
    """Rows of BST_description.csv, in label order."""
    return [
        {"class": c.code, "name": c.name, "description": c.description, "examples": class_examples(c.description)}
        for c in CLASSES
    ]


def _vocab(code: str) -> tuple[str, ...]:
    return VOCAB[code] if code in VOCAB else PARENT_VOCAB[code.split("-", 1)[0]]


def _misleading_word(rng: np.random.Generator, code: str) -> str:
    """A word of another class: a sibling's two times out of three."""
    parent = code.split("-", 1)[0]
    siblings = [c for c in CODES if c != code and c.split("-", 1)[0] == parent]
    others = [c for c in CODES if c.split("-", 1)[0] != parent]
    pool = siblings if rng.uniform() < 2 / 3 else others
    return str(rng.choice(VOCAB[str(rng.choice(pool))]))


def _pick(rng: np.random.Generator, words: tuple[str, ...], k: int) -> list[str]:
    return [str(w) for w in rng.choice(words, size=min(k, len(words)), replace=False)]


def make_metadata(rng: np.random.Generator, code: str) -> Metadata:
    """Title, tags and description of one clip of (true) class `code`."""
    informative = rng.uniform() > 0.08
    cls = _pick(rng, _vocab(code), int(rng.integers(1, 4))) if informative else []
    noise = _pick(rng, DISTRACTORS, int(rng.integers(1, 5)))
    if rng.uniform() < MISLEADING_RATE:
        noise.append(_misleading_word(rng, code))
    number = int(rng.integers(1, 999))

    title_style = rng.integers(4)
    head = (cls or noise)[0]
    if title_style == 0:
        title = f"{head.capitalize()} {noise[0]} {number:02d}"
    elif title_style == 1:
        title = f"{'_'.join(cls + noise[:1])}_{number:03d}.wav"
    elif title_style == 2:
        title = " ".join(w.capitalize() for w in (cls + noise)[:3])
    else:
        title = f"GEN{number:04d}.wav"  # uninformative file-name title

    tag_words = cls + noise
    if informative and rng.uniform() < 0.5:
        tag_words += _pick(rng, _vocab(code), 1)
    tags = ",".join(dict.fromkeys(w.replace(" ", "-") for w in rng.permutation(tag_words)))
    if rng.uniform() < 0.07:
        tags = ""

    description = _description(rng, cls, noise)
    if rng.uniform() < 0.10:
        description = ""
    if rng.uniform() < 0.08:
        title, description = with_non_ascii(rng, title, description)
    return Metadata(title, tags, description)


def _description(rng: np.random.Generator, cls: list[str], noise: list[str]) -> str:
    subject = " ".join(cls[:2]) or noise[0]
    sentences = [
        f"{subject.capitalize()} {rng.choice(['recorded', 'captured', 'made'])} with {rng.choice(DEVICES)} "
        f"{rng.choice(PLACES)}.",
    ]
    if len(cls) > 2 or rng.uniform() < 0.4:
        use = rng.choice(["project", "game", "film"])
        sentences.append(f"A {rng.choice(noise)} {' '.join(cls[1:]) or 'sound'} for your {use}.")
    if rng.uniform() < 0.3:
        sentences.append("Free to use, credit appreciated.")
    text = " ".join(sentences)
    if rng.uniform() < 0.12:
        text = with_html(rng, text)
    elif rng.uniform() < 0.1:
        text = text.replace(". ", ".\n\n", 1)  # multi-line descriptions need CSV quoting
    return text


def with_html(rng: np.random.Generator, text: str) -> str:
    """The same words wrapped in the markup Freesound descriptions carry (links, bold, breaks, entities)."""
    first, _, rest = text.partition(" ")
    link = f'<a href="https://freesound.org/people/user{int(rng.integers(1, 9999))}/">my other sounds</a>'
    return f"<b>{first}</b> {rest}<br />Made &amp; uploaded by me. {link}<p></p>"


def with_non_ascii(rng: np.random.Generator, title: str, description: str) -> tuple[str, str]:
    """Append accented, CJK and emoji words: three encodings of trouble for a CSV reader and a tokenizer."""
    accented, cjk, emoji = (str(rng.choice(pool)) for pool in (ACCENTED, CJK, EMOJI))
    return f"{title} {accented}", f"{description} {cjk} {emoji}".strip()


def uploader_pool(rng: np.random.Generator, size: int = 40) -> list[str]:
    """Freesound-like user names (some with non-ASCII letters)."""
    stems = ("field", "sound", "audio", "rec", "noise", "sample", "foley", "studio", "josé", "anna", "mika", "lee")
    tails = ("hunter", "maker", "lab", "fx", "works", "guy", "girl", "box", "ö", "99")
    return [f"{rng.choice(stems)}{rng.choice(tails)}{int(rng.integers(0, 100))}" for _ in range(size)]
