"""Shared fixtures: a tokenizer trained once per session, helpers to run the CLI."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny" / "pretrain.yaml"
# test_interop_mindformers.py needs mindformers, which pins mindspore 2.9: ci/run.sh runs it in
# .venv-mf. Without mindformers it is not collected at all (a skip would read as a pass); naming
# the file on the command line still collects it, and then it fails on the import.
collect_ignore = [] if importlib.util.find_spec("mindformers") else ["test_interop_mindformers.py"]


def pytest_configure(config):
    """Every in-process MindSpore test runs on CPU, so the device is set once per process
    before any test can run a kernel: MindSpore refuses `set_device` after one has run, and
    pytest-xdist hands files to workers in an order that differs run to run (a file that ran a
    kernel first made the next file's `set_device("CPU")` fail in one fresh-clone CI)."""
    import mindspore

    mindspore.set_device("CPU")


def live_procs_of(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid` (the sandbox tests' leftover check)."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            pids.append(int(entry))
    return pids


@contextlib.contextmanager
def sandbox_host_check(monkeypatch, uid: int, name: str):
    """Runs inside get run directories and cgroups named for this test file, and a sandbox uid
    of its own; afterwards none of its processes, directories or cgroups may be left. Scoped
    so that sandbox runs of other test files, alongside under xdist, are not counted."""
    from mindxh.rewards import _cgroup

    runs = tempfile.mkdtemp(prefix=f"mindxh-{name}-test-", dir="/tmp")
    os.chmod(runs, 0o755)  # the sandbox uid must reach its work directory
    monkeypatch.setattr(tempfile, "tempdir", runs)
    cgroups: list[str] = []
    init = _cgroup.RunCgroup.__init__

    def recording_init(self, dirs):
        cgroups.extend(dirs.values())
        init(self, dirs)

    monkeypatch.setattr(_cgroup.RunCgroup, "__init__", recording_init)
    monkeypatch.setattr(_cgroup.RunCgroup, "prefix", f"mindxh-{name}test-")
    try:
        yield
        if os.geteuid() == 0:
            assert live_procs_of(uid) == [], "sandbox processes outlived their run"
        assert os.listdir(runs) == [], "a run directory was left behind"
        assert [c for c in cgroups if os.path.exists(c)] == [], "a run cgroup was left behind"
        assert subprocess.run(["true"]).returncode == 0  # the host can still start processes
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m mindxh ARGS` in a fresh process, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mindxh", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """The tokenizer the default recipe would train, made once for every test."""
    from mindxh.config import load_recipe
    from mindxh.train.trainer import prepare_tokenizer

    out = tmp_path_factory.mktemp("tok")
    prepare_tokenizer(load_recipe(TINY), out)
    return out / "tokenizer.model"


def randomise_expert_bias(model, rng, scale: float = 0.05) -> None:
    """Non-zero balancing biases (a fresh model's are zero), so tests see them change routing."""
    import mindspore as ms
    import numpy as np

    for p in model.get_parameters():
        if p.name.endswith("expert_bias"):
            p.set_data(ms.Tensor(rng.normal(0, scale, p.shape).astype(np.float32)))


@pytest.fixture(scope="session")
def json_tok_path(tmp_path_factory) -> Path:
    """A tiny byte-level BPE tokenizer.json; its BOS/EOS have names no guess would find, so they
    come from the tokenizer_config.json beside it (in the workers too)."""
    import json

    import tokenizers as hf

    from mindxh.data.synthetic import sample_texts

    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<|go|>", "<|stop|>"],
                                     initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample_texts(0, "train", [1, 2, 3], 200), trainer)
    folder = tmp_path_factory.mktemp("hf")
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|go|>", "eos_token": {"content": "<|stop|>"}, "pad_token": "<pad>"}))
    return folder / "tokenizer.json"
