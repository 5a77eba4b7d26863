"""Tests for mindxh.checkpoint.store: round trip, pruning, atomicity, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mindxh
from mindxh.checkpoint.store import (
    FAULT_ENV,
    CheckpointError,
    clean_stale_temporaries,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

RECIPE = "model:\n  n_layers: 2\nlr: 3.0e-4\n"


def _model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "layers.0.attn.q.weight": rng.standard_normal((8, 8)).astype(np.float32),
        "norm.weight": np.array([np.nan, np.inf, -0.0, 1e-45], dtype=np.float32),
    }


def _optimizer(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    return {
        "embed.weight.exp_avg": rng.standard_normal((16, 8)).astype(np.float32),
        "embed.weight.exp_avg_sq": rng.random((16, 8)).astype(np.float32),
        "step": np.array([7], dtype=np.int64),
        "half": rng.standard_normal(3).astype(np.float16),
    }


def _state(step: int) -> dict:
    rng_state = np.random.default_rng(step).bit_generator.state
    return {"step": step, "data": {"shard": 1, "offset": 4096}, "rng": rng_state}


def _save(root: Path, step: int, keep_last: int = 3, seed: int = 0) -> Path:
    return save_checkpoint(
        root, step, _model(seed), _optimizer(seed), _state(step), RECIPE, keep_last
    )


def _assert_bitwise_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name
        assert np.array_equal(a[name], b[name], equal_nan=True), name


def test_round_trip_is_bitwise(tmp_path: Path) -> None:
    path = _save(tmp_path, 42)
    assert path == tmp_path / "checkpoints" / "step-00000042"
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "recipe.yaml", "state.json",
    ]
    ckpt = load_checkpoint(path)
    assert ckpt.step == 42
    assert ckpt.path == path
    assert ckpt.recipe_text == RECIPE
    assert ckpt.state == json.loads(json.dumps(_state(42)))
    _assert_bitwise_equal(ckpt.model, _model())
    _assert_bitwise_equal(ckpt.optimizer, _optimizer())


def test_safetensors_metadata(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = _save(tmp_path, 5)
    for fname in ("model.safetensors", "optimizer.safetensors"):
        with safe_open(str(path / fname), framework="numpy") as f:
            # one key: safetensors orders a metadata map differently in each process, so
            # two keys made identical runs' files differ byte for byte
            assert f.metadata() == {"format": "mindxh-1"}


def test_keep_last_prunes_oldest(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000030", "step-00000040"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000040"


def test_keep_last_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _save(tmp_path, 1, keep_last=0)


def test_latest_ignores_temporaries_and_incomplete(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert latest_checkpoint(tmp_path) is None
    _save(tmp_path, 1)
    ckpts = tmp_path / "checkpoints"
    (ckpts / ".step-00000002.tmp-999").mkdir()
    incomplete = ckpts / "step-00000003"
    incomplete.mkdir()
    (incomplete / "model.safetensors").write_bytes(b"")
    bad_json = ckpts / "step-00000004"
    bad_json.mkdir()
    for fname in ("model.safetensors", "optimizer.safetensors", "recipe.yaml"):
        (bad_json / fname).write_bytes(b"x")
    (bad_json / "state.json").write_text("{not json")
    with caplog.at_level("WARNING", logger="mindxh.checkpoint.store"):
        assert latest_checkpoint(tmp_path) == ckpts / "step-00000001"
    warned = caplog.text
    assert "step-00000003" in warned and "step-00000004" in warned
    assert ".tmp-" not in warned


def test_replace_existing_step(tmp_path: Path) -> None:
    _save(tmp_path, 7, seed=1)
    path = _save(tmp_path, 7, seed=2)
    ckpt = load_checkpoint(path)
    _assert_bitwise_equal(ckpt.model, _model(2))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000007"]


def test_truncated_safetensors_names_file(tmp_path: Path) -> None:
    path = _save(tmp_path, 3)
    target = path / "optimizer.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="optimizer.safetensors"):
        load_checkpoint(path)


def test_missing_file_names_file(tmp_path: Path) -> None:
    path = _save(tmp_path, 3)
    (path / "recipe.yaml").unlink()
    with pytest.raises(CheckpointError, match="recipe.yaml"):
        load_checkpoint(path)


def test_corrupt_state_names_file(tmp_path: Path) -> None:
    path = _save(tmp_path, 3)
    (path / "state.json").write_text('{"step": 3')
    with pytest.raises(CheckpointError, match="state.json"):
        load_checkpoint(path)


def test_a_step_that_disagrees_with_its_directory_is_refused(tmp_path: Path) -> None:
    """An edited state.json saying step 4 in step-00000010 would rewind a resume over the
    later metrics and checkpoints."""
    path = _save(tmp_path, 10)
    payload = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**payload, "step": 4}))
    with pytest.raises(CheckpointError, match="says step 4, but its directory is step-00000010"):
        load_checkpoint(path)
    (path / "state.json").write_text(json.dumps({**payload, "state": [1, 2]}))
    with pytest.raises(CheckpointError, match="'state' is not an object"):
        load_checkpoint(path)


def test_clean_restores_set_aside_checkpoint(tmp_path: Path) -> None:
    """Crash between 'rename old aside' and 'rename new in' keeps the old copy."""
    path = _save(tmp_path, 9)
    ckpts = path.parent
    os.rename(path, ckpts / ".step-00000009.old-123")
    (ckpts / ".step-00000009.tmp-123").mkdir()
    removed = clean_stale_temporaries(tmp_path)
    assert removed == [ckpts / ".step-00000009.tmp-123"]
    assert latest_checkpoint(tmp_path) == path
    load_checkpoint(path)


_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from mindxh.checkpoint.store import save_checkpoint

    root = sys.argv[1]
    for step in (1, 2):
        model = {"w": np.full((4, 4), step, dtype=np.float32)}
        opt = {"m": np.zeros(4, dtype=np.float32)}
        save_checkpoint(root, step, model, opt, {"step": step}, "r: 1\\n", keep_last=3)
    """
)


def test_kill_9_mid_checkpoint_loses_nothing(tmp_path: Path) -> None:
    repo_root = Path(mindxh.__file__).resolve().parents[1]
    env = dict(os.environ)
    env[FAULT_ENV] = "2"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    ckpts = tmp_path / "checkpoints"
    latest = latest_checkpoint(tmp_path)
    assert latest == ckpts / "step-00000001"
    ckpt = load_checkpoint(latest)
    assert ckpt.step == 1
    assert np.array_equal(ckpt.model["w"], np.full((4, 4), 1, dtype=np.float32))

    temps = [p for p in ckpts.iterdir() if p.name.startswith(".step-00000002.tmp-")]
    assert len(temps) == 1
    assert (temps[0] / "model.safetensors").is_file()
    assert not (ckpts / "step-00000002").exists()

    assert clean_stale_temporaries(tmp_path) == temps
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000001"]
    assert clean_stale_temporaries(tmp_path) == []
