"""Staging folders (export, converters): what a killed process leaves beside the output is
cleared by the next run, and an output set aside mid-swap is put back, never lost."""
from __future__ import annotations

import os
import subprocess
import sys

from mindxh.utils.fsio import pid_alive, read_jsonl, staging_dir, swap_in, write_jsonl


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_staging_folder_is_cleared_and_a_live_ones_kept(tmp_path):
    out = tmp_path / "export"
    stale = tmp_path / f".export.mindxh-tmp-{_dead_pid()}"
    stale.mkdir()
    (stale / "decode.mindir").write_bytes(b"x" * 1000)
    live = tmp_path / ".export.mindxh-tmp-1"  # pid 1 is alive: another process's folder
    live.mkdir()
    tmp = staging_dir(out)
    (tmp / "manifest.json").write_text("{}")
    swap_in(tmp, out)
    assert not stale.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.mindxh-tmp-1", "export"]


def test_an_output_set_aside_by_a_killed_swap_is_put_back(tmp_path):
    out = tmp_path / "export"
    aside = tmp_path / f".export.mindxh-old-{_dead_pid()}"  # killed between swap_in's two renames
    aside.mkdir()
    (aside / "manifest.json").write_text('{"old": true}')
    tmp = staging_dir(out)
    assert (out / "manifest.json").read_text() == '{"old": true}' and not aside.exists()
    (tmp / "manifest.json").write_text('{"new": true}')
    swap_in(tmp, out)
    assert (out / "manifest.json").read_text() == '{"new": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_an_aside_copy_left_after_the_swap_is_removed(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "manifest.json").write_text('{"new": true}')
    aside = tmp_path / f".export.mindxh-old-{_dead_pid()}"  # killed after both renames, before cleanup
    aside.mkdir()
    staging_dir(out).rmdir()
    assert not aside.exists() and (out / "manifest.json").read_text() == '{"new": true}'


def test_a_name_with_glob_characters_matches_only_its_own_siblings(tmp_path):
    out = tmp_path / "model[v2]"
    other = tmp_path / f".modelv.mindxh-old-{_dead_pid()}"  # another output's (`modelv`), not ours
    other.mkdir()
    staging_dir(out).rmdir()
    assert other.is_dir() and not out.exists()


def test_process_liveness():
    assert pid_alive(os.getpid()) and pid_alive(1)
    assert not pid_alive(_dead_pid()) and not pid_alive(0) and not pid_alive(-1)
    assert not pid_alive(10**20)  # no pid is that large (os.kill raised OverflowError)


def test_only_our_own_staging_names_are_touched(tmp_path):
    """A user's `.export.old-20240501` backup, a similar name for another output, and a
    non-ASCII digit are left alone (they used to be deleted, restored or crash the cleanup)."""
    out = tmp_path / "export"
    dead = _dead_pid()
    keep = [tmp_path / n for n in (".export.old-20240501", f".export.old-{dead}",
                                   f".export.mindxh-old-x.mindxh-tmp-{dead}", ".export.mindxh-tmp-\u00b2",
                                   f".export.mindxh-old-{dead}.bak")]
    for path in keep:
        path.mkdir()
    staging_dir(out).rmdir()
    assert all(p.is_dir() for p in keep) and not out.exists()


def test_a_killed_predecessor_with_our_pid_and_a_half_removed_copy(tmp_path):
    """In a container the pid repeats, so a stale folder named with ours is a predecessor's;
    a copy killed mid-removal (`del`) is removed, never put back as the output."""
    out = tmp_path / "export"
    aside = tmp_path / f".export.mindxh-old-{os.getpid()}"
    aside.mkdir()
    (aside / "manifest.json").write_text('{"old": true}')
    trash = tmp_path / f".export.mindxh-del-{_dead_pid()}"
    trash.mkdir()
    (trash / "part").write_text("half")
    staging_dir(out).rmdir()
    assert (out / "manifest.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_swap_in_leaves_only_the_new_output(tmp_path):
    out = tmp_path / "export"
    for value in ("first", "second"):
        tmp = staging_dir(out)
        (tmp / "v").write_text(value)
        swap_in(tmp, out)
    assert (out / "v").read_text() == "second" and [p.name for p in tmp_path.iterdir()] == ["export"]


def test_jsonl_round_trip_keeps_unicode_line_separators(tmp_path):
    """write_jsonl keeps non-ASCII as is, and JSON strings may hold U+2028, U+2029 and U+0085
    unescaped: str.splitlines() took them for line ends and the reader failed."""
    records = [{"response": "a\u2028b\u2029c\x85d\u000be"}, {"n": 2}]
    write_jsonl(tmp_path / "r.jsonl", records)
    assert read_jsonl(tmp_path / "r.jsonl") == records
