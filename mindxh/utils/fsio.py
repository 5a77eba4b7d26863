"""Durable file-system helpers shared by checkpoints and prepared datasets."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | os.PathLike[str] | Path) -> None:
    """fsync a file or directory so its contents (or entries) survive power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
