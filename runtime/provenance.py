"""Which pip distributions (and Python) produced an artefact: the run record of `bst-rt predict` and the bundle's
manifest both record them, so the export floor reads them here rather than from the predict run."""
from __future__ import annotations

import platform
from importlib import metadata as importlib_metadata
from typing import Sequence

#: the runtime's own distributions; the ones not installed are left out of the record
RUNTIME_PACKAGES = ("bst-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "soundfile", "soxr", "tokenizers", "typer")


def package_versions(names: Sequence[str] = RUNTIME_PACKAGES) -> dict[str, str]:
    """{distribution: version} of the installed ones among `names`, plus 'python'."""
    found = {}
    for name in names:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found
