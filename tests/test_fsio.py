"""Staging folders (export, converters): what a killed process leaves beside the output is
cleared by the next run, and an output set aside mid-swap is put back, never lost."""
from __future__ import annotations

import subprocess
import sys

from mindxh.utils.fsio import staging_dir, swap_in


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_staging_folder_is_cleared_and_a_live_ones_kept(tmp_path):
    out = tmp_path / "export"
    stale = tmp_path / f".export.tmp-{_dead_pid()}"
    stale.mkdir()
    (stale / "decode.mindir").write_bytes(b"x" * 1000)
    live = tmp_path / ".export.tmp-1"  # pid 1 is alive: another process's folder
    live.mkdir()
    tmp = staging_dir(out)
    (tmp / "manifest.json").write_text("{}")
    swap_in(tmp, out)
    assert not stale.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.tmp-1", "export"]


def test_an_output_set_aside_by_a_killed_swap_is_put_back(tmp_path):
    out = tmp_path / "export"
    aside = tmp_path / f".export.old-{_dead_pid()}"  # killed between swap_in's two renames
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
    aside = tmp_path / f".export.old-{_dead_pid()}"  # killed after both renames, before cleanup
    aside.mkdir()
    staging_dir(out).rmdir()
    assert not aside.exists() and (out / "manifest.json").read_text() == '{"new": true}'


def test_a_name_with_glob_characters_matches_only_its_own_siblings(tmp_path):
    out = tmp_path / "model[v2]"
    other = tmp_path / f".modelv.old-{_dead_pid()}"  # another output's (`modelv`), not ours
    other.mkdir()
    staging_dir(out).rmdir()
    assert other.is_dir() and not out.exists()
