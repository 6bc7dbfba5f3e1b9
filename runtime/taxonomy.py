"""The Broad Sound Taxonomy: the one table every other module reads.

Label index order is the official baseline's (DCASE 2026 Task 1); never reorder it, trained graphs depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BstClass:
    index: int
    code: str
    name: str
    description: str

    @property
    def parent(self) -> str:
        return self.code.split("-", 1)[0]


PARENT_NAMES: dict[str, str] = {
    "m": "Music",
    "is": "Instrument samples",
    "sp": "Speech",
    "fx": "Sound effects",
    "ss": "Soundscapes",
}

_TABLE: tuple[tuple[str, str, str], ...] = (
    ("m-sp", "Solo percussion", "Music played by a single percussion instrument or drum kit: beats, grooves, rhythms."),
    ("m-si", "Solo instrument", "Music performed by one melodic instrument: a solo guitar, violin, flute or piano piece."),
    ("m-m", "Multiple instruments", "Music with several instruments or an ensemble: bands, orchestras, songs, full mixes."),
    ("is-p", "Percussion", "Single percussion hits and one-shot samples: kicks, snares, hi-hats, cymbals, claps."),
    ("is-s", "String", "Single notes or short phrases of string instruments: guitar, violin, cello, bass, plucks."),
    ("is-w", "Wind", "Single notes of wind and brass instruments: flute, clarinet, saxophone, trumpet, horn."),
    ("is-k", "Piano / Keyboard instruments", "Single notes or chords of piano, organ, harpsichord and other keyboards."),
    ("is-e", "Synths / Electronic", "Synthesizer and electronic instrument samples: leads, pads, basses, arpeggios."),
    ("sp-s", "Solo speech", "One person speaking: narration, a voice recording, reading, a spoken word or phrase."),
    ("sp-c", "Conversation / Crowd", "Several people talking: conversations, dialogue, crowd chatter and murmur."),
    ("sp-p", "Processed / Synthetic", "Speech that is processed or synthetic: robot voices, text to speech, vocoded or distorted voice."),
    ("fx-o", "Objects / House appliances", "Sounds of objects and household appliances: doors, keys, dishes, switches, drawers."),
    ("fx-v", "Vehicles", "Sounds of vehicles: cars, trains, motorcycles, aircraft, passing traffic, horns."),
    ("fx-m", "Other mechanisms, engines, machines", "Machines, engines, motors and mechanisms: industrial noise, gears, fans, tools."),
    ("fx-h", "Human sounds and actions", "Non-speech human sounds: footsteps, breathing, coughing, laughing, clapping, eating."),
    ("fx-a", "Animals", "Animal sounds: birds, dogs, cats, insects, farm animals, calls and cries."),
    ("fx-n", "Natural elements and explosions", "Natural elements and explosions: wind, water, fire, thunder, rain drops, blasts."),
    ("fx-ex", "Experimental", "Experimental and abstract sound: noise art, glitches, unusual textures, field manipulations."),
    ("fx-el", "Electronic / Design", "Designed electronic effects: whooshes, risers, beeps, user-interface sounds, sci-fi effects."),
    ("ss-n", "Nature", "Natural soundscapes: forest ambience, birdsong backgrounds, rain, streams, ocean waves."),
    ("ss-i", "Indoors", "Indoor ambiences: room tone, offices, restaurants, kitchens, halls, public interiors."),
    ("ss-u", "Urban", "Urban soundscapes: streets, city traffic, markets, construction, stations."),
    ("ss-s", "Synthetic / Artificial", "Synthetic soundscapes: drones, generated ambient textures, artificial atmospheres."),
)

CLASSES: tuple[BstClass, ...] = tuple(BstClass(i, c, n, d) for i, (c, n, d) in enumerate(_TABLE))
CODES: tuple[str, ...] = tuple(c.code for c in CLASSES)
NUM_CLASSES: int = len(CODES)
CODE_TO_INDEX: dict[str, int] = {c: i for i, c in enumerate(CODES)}
PARENTS: tuple[str, ...] = tuple(PARENT_NAMES)
OTHER_CODES: frozenset[str] = frozenset(f"{p}-other" for p in PARENTS)
#: parent index (into PARENTS) of every class, in label order
PARENT_INDEX: np.ndarray = np.array([PARENTS.index(c.parent) for c in CLASSES], dtype=np.int64)


def parent_of(code: str) -> str:
    """Parent code of a second-level code (the part before the hyphen)."""
    if code not in CODE_TO_INDEX:
        raise KeyError(f"not a BST second-level class: {code!r}")
    return code.split("-", 1)[0]


def is_valid_code(code: str) -> bool:
    return code in CODE_TO_INDEX


def same_parent(a: int, b: int) -> bool:
    """Whether two class indices share their top-level parent."""
    return bool(PARENT_INDEX[a] == PARENT_INDEX[b])


def parent_mass(probs: np.ndarray) -> np.ndarray:
    """Sum child probabilities per parent: [..., 23] -> [..., 5]."""
    out = np.zeros(probs.shape[:-1] + (len(PARENTS),), dtype=probs.dtype)
    for p in range(len(PARENTS)):
        out[..., p] = probs[..., PARENT_INDEX == p].sum(axis=-1)
    return out


def class_table_markdown() -> str:
    """The README's class table (code, name, parent), generated from _TABLE: `python -m bst_rt.runtime.taxonomy`."""
    lines = ["| idx | code | name | parent |", "|---|---|---|---|"]
    lines += [f"| {c.index} | `{c.code}` | {c.name} | {PARENT_NAMES[c.parent]} (`{c.parent}`) |" for c in CLASSES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(class_table_markdown(), end="")
