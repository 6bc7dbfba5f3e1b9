"""Exceptions the library raises; the CLIs turn any BstError into one line and exit 1, never a traceback."""
from __future__ import annotations


class BstError(Exception):
    """Base class: a problem the user can act on (bad file, bad argument, bad bundle)."""


class DataError(BstError):
    """A dataset, evaluation package or metadata file cannot be read as documented."""


class AudioError(BstError):
    """An audio file cannot be decoded into a usable waveform."""


class SubmissionError(BstError):
    """A submission CSV breaks the DCASE format."""


class BundleError(BstError):
    """A bundle is missing, tampered with, or of another schema version."""
