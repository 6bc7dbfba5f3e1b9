"""`Clip`: one item of the runtime and of its public API (`bst_rt.runtime.Clip`), in a room of its own because
the readers (`datasets`), the predictor, the Ray source and training all hand it around."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .text import metadata_text


@dataclass(frozen=True)
class Clip:
    """One sound: its id as written in the CSV, its metadata, its audio file (None if absent) and its label."""

    id: str
    title: str = ""
    tags: str = ""
    description: str = ""
    audio_path: Path | None = None
    label: str | None = None
    confidence: float | None = None
    #: the metadata row was not valid UTF-8 and was read with U+FFFD replacement characters
    metadata_repaired: bool = False

    @property
    def text(self) -> str:
        """The string the CLAP text encoder sees (THE template, `text.metadata_text`)."""
        return metadata_text(self.title, self.tags, self.description)
