"""Durable file-system helpers: fsync, atomic replace, JSON lines.

Every file mindxh writes that a reader may see half-done (tokenizer, manifests, stage
results, caches, metrics rewritten on resume) goes through `atomic_write`: a temporary
sibling, flushed and fsynced, renamed over the target. A crash leaves the old file or the
new one, never a torn one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

__all__ = ["atomic_write", "atomic_write_json", "file_sha256", "fsync_path", "pid_alive", "read_jsonl",
           "staging_dir", "swap_in", "write_jsonl"]


def fsync_path(path: str | os.PathLike[str] | Path) -> None:
    """fsync a file or directory so its contents (or entries) survive power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Replace `path` with `data` (text is UTF-8) all at once; its folder is created.

    The file gets the permissions a plain `open(path, "w")` would (mkstemp's 0600 is
    widened by the umask), and the folder entry is fsynced after the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike[str], data: Any, indent: int | None = 2,
                      sort_keys: bool = False) -> Path:
    """`atomic_write` of `data` as JSON with a final newline."""
    return atomic_write(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """All `records` as JSON lines (non-ASCII kept), written atomically."""
    return atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Every non-blank line of a JSON-lines file we wrote ourselves (no per-line validation:
    for user input, see `mindxh.utils.records.read_records`)."""
    text = Path(path).read_text(encoding="utf-8")  # split at \n only: write_jsonl keeps U+2028,
    return [json.loads(line) for line in text.split("\n") if line.strip()]  # U+0085 unescaped


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie, dead but not reaped, does not).
    A process this user may not see (another user's under `hidepid`) counts as running."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no such process, a hidden one, or no /proc (not Linux)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except (OSError, OverflowError):  # OverflowError: no pid is that large
            return False
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # the command name may hold ')'


# Sibling folders of an output while it is replaced: `.NAME.mindxh-tmp-PID` (being filled),
# `.NAME.mindxh-old-PID` (the previous output, set aside) and `.NAME.mindxh-del-PID` (being
# removed). The `mindxh-` prefix keeps a user's own `.NAME.old-2024` backups out of them.
_STAGING_KINDS = ("old", "del", "tmp")


def _sibling(out: Path, kind: str, pid: int) -> Path:
    return out.parent / f".{out.name}.mindxh-{kind}-{pid}"


def _clear_stale(out: Path) -> None:
    """Siblings a killed process left: its half-filled `tmp` and half-removed `del` folders
    go; its set-aside `old` one is put back if the kill came between the two renames of
    `swap_in` (so no `out`), and goes otherwise. Folders of live processes are theirs and stay;
    one named with this process's own pid is a killed predecessor's (pids repeat in containers)."""
    if not out.parent.is_dir():
        return
    own = re.compile(rf"\.{re.escape(out.name)}\.mindxh-({'|'.join(_STAGING_KINDS)})-([0-9]+)")
    found = [(m.group(1), int(m.group(2)), path) for path in sorted(out.parent.iterdir())
             if (m := own.fullmatch(path.name))]
    for kind, pid, path in sorted(found, key=lambda f: _STAGING_KINDS.index(f[0])):
        if pid != os.getpid() and pid_alive(pid):
            continue
        if kind == "old" and not out.exists():
            os.rename(path, out)
        else:
            shutil.rmtree(path, ignore_errors=True)


def staging_dir(out: Path) -> Path:
    """A fresh hidden sibling of `out` (`.NAME.mindxh-tmp-PID`) to fill and check before
    `swap_in`; what an earlier, killed process left beside `out` is cleared first."""
    _clear_stale(out)
    tmp = _sibling(out, "tmp", os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def swap_in(tmp: Path, out: Path) -> None:
    """Rename the filled `tmp` to `out`. An existing `out` is set aside first and removed
    only once the new one is in place, so a failure before leaves it untouched; it is renamed
    once more before removal, so a kill mid-removal never leaves a part that could be put back."""
    old = _sibling(out, "old", os.getpid())
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    if old.exists():
        trash = _sibling(out, "del", os.getpid())
        os.rename(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def file_sha256(path: str | os.PathLike[str], block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (manifests of shards, exports, sources)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
