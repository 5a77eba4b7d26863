"""`mindxh launch`: real msrun jobs on CPU (integration tests, marked `slow`, still run by a
plain `pytest`): 2 ranks train in lockstep; a crashed rank, or Ctrl-C, ends the whole job
within seconds and leaves no process behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY, run_cli
from safetensors.numpy import load_file

from mindxh.launch.train_job import (
    LaunchUsageError,
    oversubscription_warning,
    plan_train,
    usable_cpus,
)

# Test-only rank programs, run through the hidden --worker-script option with the same
# `train RECIPE ...` arguments a rank gets.
DUMP_WORKER = '''
"""`mindxh train ...`, then this rank's final weights and optimizer state to
OUTPUT_DIR/params-rank<R>.npz: the trainer itself saves rank 0's only."""
import sys
import numpy as np
from mindxh.cli.main import main
from mindxh.train.run import RunDir

runs, start = [], RunDir.start
RunDir.start = lambda self, *a, **k: runs.append(start(self, *a, **k)) or runs[-1]
code = main(sys.argv[1:])
for run in runs:
    arrays = {"model/" + n: p.asnumpy() for n, p in run.model.parameters_and_names()}
    arrays.update({"optim/" + n: p.asnumpy() for n, p in run.optimizer.state_parameters()})
    np.savez(run.dir.out / f"params-rank{run.dir.rank}.npz", **arrays)
sys.exit(code)
'''
STUCK_WORKER = '''
"""Every rank joins the cluster; with CRASH_RANK=R rank R then dies while the others keep
all-reducing (blocked on the dead rank, or looping): no rank ends on its own."""
import os, time
import numpy as np
import mindspore as ms
from mindspore import ops
from mindspore.communication import get_rank, init

init()
print(f"rank {get_rank()} ready", flush=True)
if str(get_rank()) == os.environ.get("CRASH_RANK"):
    raise RuntimeError(f"deliberate crash on rank {get_rank()}")
while True:
    ops.communication.all_reduce(ms.Tensor(np.ones(4, np.float32)))
    time.sleep(0.2)
'''


def _left_behind(mark: str) -> list[int]:
    """Pids of live processes whose environment holds MARK (set for one launch only)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and mark.encode() in (proc / "environ").read_bytes()
                    and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def new_mark():
    """Marks for this test's jobs; whatever still carries one when the test ends (a failed
    assertion before the job ended) is killed, so no stray rank outlives its test."""
    marks: list[str] = []

    def make() -> str:
        marks.append(uuid.uuid4().hex)
        return marks[-1]

    yield make
    for pid in [pid for mark in marks for pid in _left_behind(mark)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "worker.py"
    path.write_text(text)
    return str(path)


def test_plan_sets_data_parallel_and_refuses_mismatches(tmp_path):
    job = plan_train(2, str(TINY), output_dir=str(tmp_path / "run"), max_steps=3, no_progress=True,
                     overrides=["train.batch_size=8"])
    assert job.args[:4] == ["-m", "mindxh", "train", str(TINY)]
    assert job.args[-2:] == ["--set", "parallel.data_parallel=2"]
    assert "--no-progress" in job.args and "--resume" not in job.args
    assert job.log_dir == (tmp_path / "run" / "logs").resolve()
    same = plan_train(2, str(TINY), overrides=["parallel.data_parallel=2"], script="w.py")
    assert same.args[0] == "w.py" and same.args.count("parallel.data_parallel=2") == 1
    with pytest.raises(LaunchUsageError, match="= 3 devices but --nproc is 2; pass --nproc 3"):
        plan_train(2, str(TINY), overrides=["parallel.data_parallel=3"])
    # tensor and pipeline parallel: --nproc counts every device, data parallel the replicas
    mindspeed = str(REPO / "recipes" / "ascend" / "llama2-7b-910b-mindspeed.yaml")  # 4 x 1 x 2
    assert not any("data_parallel" in a for a in plan_train(8, mindspeed).args)
    with pytest.raises(LaunchUsageError, match="= 8 devices but --nproc is 4; pass --nproc 8"):
        plan_train(4, mindspeed)
    big = str(REPO / "recipes" / "ascend" / "llama2-70b-910b.yaml")  # 1 x 8 x 4
    assert not any("data_parallel" in a for a in plan_train(32, big).args)
    assert plan_train(64, big).args[-2:] == ["--set", "parallel.data_parallel=2"]
    with pytest.raises(LaunchUsageError, match="--nproc 48 is not a multiple of .* = 32"):
        plan_train(48, big)
    done = tmp_path / "done"  # refused before msrun starts (and rotates the run's logs)
    done.mkdir()
    (done / "metrics.jsonl").write_text('{"step": 2}\n')
    with pytest.raises(LaunchUsageError, match="already holds a run; pass --resume"):
        plan_train(2, str(TINY), output_dir=str(done))
    assert plan_train(2, str(TINY), output_dir=str(done), resume=True).args[-2:] == \
        ["--set", "parallel.data_parallel=2"]
    with pytest.raises(LaunchUsageError, match="at least 2 ranks"):
        plan_train(1, str(TINY))
    with pytest.raises(LaunchUsageError, match="parallel tensor=2 needs MindSpore semi-auto"):
        plan_train(2, str(TINY), overrides=["parallel.tensor=2"])  # CPU: refused before msrun


def test_more_ranks_than_cpus_is_a_warning_not_an_error():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
    assert oversubscription_warning(2, 2) is None and oversubscription_warning(2, 16) is None
    line = oversubscription_warning(4, 2)
    assert "--nproc 4" in line and "2 CPU(s)" in line and "--nproc 2 or fewer" in line


MOE = REPO / "recipes" / "tiny" / "pretrain-moe.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [TINY, MOE], ids=["dense", "moe-bias-balancing"])
def test_two_ranks_train_with_bitwise_identical_parameters(tmp_path, tiny_tokenizer, recipe,
                                                          new_mark):
    """For the MoE recipe this also checks DeepSeek-V3's bias balancing under data parallel:
    each rank routes different tokens, so without the all-reduce of the per-expert counts the
    ranks' expert biases would drift apart."""
    out, mark = tmp_path / "run", new_mark()
    steps = 4
    res = run_cli("launch", "--nproc", "2", "--worker-script", _script(tmp_path, DUMP_WORKER),
                  str(recipe), "--output-dir", str(out), "--max-steps", str(steps), "--no-progress",
                  "--set", f"tokenizer.path={tiny_tokenizer}", "--set", "train.batch_size=8",
                  "--set", "train.log_every=1", "--set", "data.heldout_batches=1",
                  env={"MINDXH_TEST_MARK": mark}, timeout=400)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.startswith(f"done: {steps} steps"), res.stdout  # rank 0's summary, once
    assert f"[mindxh] step {steps}/{steps}" in res.stderr  # rank 0's log lines are relayed
    assert _left_behind(mark) == []
    exits = sorted(p.name for p in (out / "logs" / "exit").iterdir())
    assert exits == ["scheduler.exit", "worker_0.exit", "worker_1.exit"]

    r0, r1 = np.load(out / "params-rank0.npz"), np.load(out / "params-rank1.npz")
    assert sorted(r0.files) == sorted(r1.files) and any(k.startswith("optim/") for k in r0.files)
    differ = [k for k in r0.files if not np.array_equal(r0[k], r1[k])]
    assert differ == [], f"ranks diverged in {differ}"
    biases = [k for k in r0.files if k.endswith("expert_bias")]
    assert bool(biases) == (recipe == MOE)
    assert all(np.abs(r0[k]).max() > 0 for k in biases)  # the balancing did update them
    saved = load_file(str(out / f"checkpoints/step-{steps:08d}/model.safetensors"))
    dumped = {k[len("model/"):]: r0[k] for k in r0.files if k.startswith("model/")}
    assert saved.keys() == dumped.keys()
    assert all(np.array_equal(saved[k], dumped[k]) for k in saved)


@pytest.mark.slow
def test_a_crashed_rank_stops_the_whole_job_within_seconds(tmp_path, new_mark):
    out, mark = tmp_path / "run", new_mark()
    start = time.time()
    res = run_cli("launch", "--nproc", "2", "--worker-script", _script(tmp_path, STUCK_WORKER),
                  str(TINY), "--output-dir", str(out),
                  env={"CRASH_RANK": "1", "MINDXH_TEST_MARK": mark}, timeout=120)
    end = time.time()
    assert res.returncode == 2, res.stderr[-4000:]
    log = out / "logs" / "worker_1.log"
    assert f"error: rank 1 exited with status 1; stopped the job (log: {log})" in res.stderr
    assert f"--- last lines of {log} ---" in res.stderr
    assert "RuntimeError: deliberate crash on rank 1" in res.stderr  # the tail of rank 1's log
    crashed_at = (out / "logs" / "exit" / "worker_1.exit").stat().st_mtime
    print(f"job {end - start:.1f}s, crash to exit {end - crashed_at:.1f}s")
    assert end - crashed_at < 10  # msrun alone waits for its scheduler's timeout (~30 s or more)
    assert end - start < 60  # start-up (3 processes importing MindSpore on 2 cores) included
    assert "rank 0 ready" in (out / "logs" / "worker_0.log").read_text()
    assert _left_behind(mark) == []


def _as_at_a_terminal() -> None:
    """Default SIGINT and SIGHUP, as a command typed at a terminal has them (a CI runner may
    start the tests with them ignored, and an ignored SIGHUP is kept, as under nohup)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _stuck_job(tmp_path: Path, mark: str) -> subprocess.Popen:
    """A launched job of two STUCK_WORKER ranks, returned once both are running."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MINDXH_TEST_MARK": mark}
    proc = subprocess.Popen([sys.executable, "-m", "mindxh", "launch", "--nproc", "2",
                             "--worker-script", _script(tmp_path, STUCK_WORKER), str(TINY),
                             "--output-dir", str(out)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_as_at_a_terminal)
    logs = [out / "logs" / f"worker_{r}.log" for r in (0, 1)]
    deadline = time.time() + 90
    while not all(p.exists() and "ready" in p.read_text() for p in logs):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    return proc


@pytest.mark.slow
def test_a_closed_terminal_or_a_killed_launcher_ends_every_rank(tmp_path, new_mark):
    """SIGHUP (a closed terminal or ssh) tears the job down like Ctrl-C; after kill -9 of the
    launcher, which tears nothing down, each rank's wrapper stops its rank by itself."""
    mark = new_mark()
    proc = _stuck_job(tmp_path / "hup", mark)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.rstrip().endswith("interrupted"), err[-3000:]
    assert _left_behind(mark) == []
    mark = new_mark()
    proc = _stuck_job(tmp_path / "kill", mark)
    proc.kill()
    proc.wait()
    deadline = time.time() + 40  # the wrappers look once a second, then give 10 s of grace
    while _left_behind(mark) and time.time() < deadline:
        time.sleep(0.5)
    assert _left_behind(mark) == []


@pytest.mark.slow
def test_ctrl_c_kills_every_rank(tmp_path, new_mark):
    mark = new_mark()
    proc = _stuck_job(tmp_path, mark)
    assert len(_left_behind(mark)) >= 5  # launcher, msrun, scheduler and two ranks (+ wrappers)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-3000:]
    assert time.time() - sent < 10
    assert _left_behind(mark) == []
