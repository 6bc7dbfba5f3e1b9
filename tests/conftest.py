"""Shared, session-scoped fixtures. Each part of the project adds its own here; keep them lazy and cached."""
from __future__ import annotations

import os

# laion-clap/transformers must never reach a hub, in tests or anywhere else.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402,F401
