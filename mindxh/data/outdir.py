"""The output directory of ``mindxh data prepare``: locking, crash recovery, atomic finish.

A preparation writes every shard into a hidden ``DIR/.partial-XXXXXXXX/`` and only at the
end moves them into ``DIR`` and writes ``manifest.json`` (temporary file, fsync, rename).
So a killed run never leaves a shard that looks complete: without ``manifest.json`` the
directory is incomplete, and the next run removes what the killed one left (its
``.partial-*`` folder and, if it died while moving files in, the shard files), and
nothing else. The user's other files in ``DIR`` are never touched.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

from mindxh.data import shards
from mindxh.data.readers import PrepareError
from mindxh.utils.fsio import fsync_path as _fsync_dir

__all__ = ["FAULT_ENV", "PARTIAL_PREFIX", "finish", "locked", "maybe_fault",
           "new_partial", "recover", "stray_shards"]

log = logging.getLogger(__name__)

PARTIAL_PREFIX = ".partial-"
# Test hook: "N" kills the process (SIGKILL) after the N-th shard is written into the
# partial folder; "finish" kills it after the shards are moved in, before the manifest.
FAULT_ENV = "MINDXH_FAULT_KILL_IN_PREPARE"


def maybe_fault(point: str) -> None:
    """SIGKILL this process if FAULT_ENV names ``point`` (tests prove crash safety)."""
    if os.environ.get(FAULT_ENV, "").strip() == point:
        import signal

        log.warning("%s=%s: killing the process (test hook)", FAULT_ENV, point)
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (two preparations into one DIR would
    remove each other's partial files)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except FileNotFoundError:  # a failed first preparation removed the DIR it had made
        raise PrepareError(f"{directory} was removed by another `mindxh data prepare` that "
                           "failed there; run again") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PrepareError(f"{directory}: another `mindxh data prepare` is writing here") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _partials(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PARTIAL_PREFIX))


def stray_shards(directory: Path) -> list[Path]:
    """Shard-named files in ``directory`` (ours by name)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and shards.is_shard_file(p.name))


def recover(directory: Path) -> bool:
    """Remove what an interrupted preparation left; True if there was anything."""
    partials = _partials(directory)
    if not partials:
        return False
    has_manifest = (directory / shards.MANIFEST_NAME).is_file()
    if not has_manifest:  # it died while moving shards in: they are ours
        for p in stray_shards(directory):
            p.unlink()
    for p in partials:
        shutil.rmtree(p)
    log.info("%s: removed the files of an interrupted preparation", directory)
    return True


def new_partial(directory: Path) -> Path:
    """A fresh hidden folder to write shards into."""
    path = directory / f"{PARTIAL_PREFIX}{secrets.token_hex(4)}"
    path.mkdir()
    return path


def finish(directory: Path, partial: Path, manifest: dict[str, Any]) -> None:
    """Replace whatever dataset ``directory`` holds by the shards in ``partial`` and write
    ``manifest`` last, atomically. A crash anywhere here is undone by :func:`recover`."""
    old = directory / shards.MANIFEST_NAME
    if old.exists():
        old.unlink()
        _fsync_dir(directory)
    for p in stray_shards(directory):
        p.unlink()
    for entry in manifest["shards"]:
        for name in (entry["file"], shards.db_name(entry["file"])):
            os.replace(partial / name, directory / name)
    _fsync_dir(directory)
    maybe_fault("finish")
    tmp = partial / (shards.MANIFEST_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, old)
    _fsync_dir(directory)
    shutil.rmtree(partial)
