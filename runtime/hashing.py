"""`file_sha256`: the one file hash of bst-rt (bundle verification, metadata and audio digests in the run record,
the embedding cache's checkpoint record)."""
from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (hashlib releases the GIL on them)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
