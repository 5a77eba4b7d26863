"""The one base class of every error a user can cause and fix (bad recipe, file, input).

`mindxh.cli.main` prints any `MindxhError` as a single `error:` line and exits 2; any other
exception is a bug in mindxh and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["MindxhError", "MissingFileError"]


class MindxhError(Exception):
    """A problem in the user's input or environment, described in one line."""


class MissingFileError(MindxhError, FileNotFoundError):
    """A file the user named (or a run should hold) does not exist; still a FileNotFoundError."""
