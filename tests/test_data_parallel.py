"""Data parallel on CPU (`mindxh launch`, i.e. msrun): 2 ranks x 8 rows must train like
1 process x 16 rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli
from safetensors.numpy import load_file

STEPS = 10
# Same 16 rows per step in the same order; only the reduction order differs (two 8-row means
# averaged by an all-reduce vs one 16-row mean), i.e. fp32 rounding: measured <= 1.2e-7 relative
# on the loss and <= 5e-7 on the grad norm over 20 steps. 1e-4 is ~1000x that noise, yet far below
# what a real bug gives: an un-reduced loss or gradient is off by ~1e-2 from step 1 or 2, and
# summed instead of averaged gradients double the logged grad norm (clipping and Adam would
# otherwise hide that in the loss).
RTOL = 1e-4
COMMON = ("--no-progress", "--max-steps", str(STEPS), "--set", "optim.warmup_steps=5",
          "--set", "train.log_every=1", "--set", "data.heldout_batches=1")


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["synthetic", "masked"])
def test_two_rank_data_parallel_matches_one_process_with_the_global_batch(tmp_path, tiny_tokenizer,
                                                                          data):
    """`masked`: SFT-like rows whose prompts are out of the loss, so the ranks hold different
    numbers of loss tokens; each rank's mean counts by its share (train.step.TokenWeighted)."""
    tok = ("--set", f"tokenizer.path={tiny_tokenizer}")
    if data == "masked":
        from prepared_data import masked_dataset

        from mindxh.tokenizer import Tokenizer

        path = masked_dataset(tmp_path / "sft", Tokenizer.load(tiny_tokenizer).sha256, n=192)
        tok += ("--set", "data.source=prepared", "--set", f"data.datasets=[{{path: {path}}}]",
                "--set", "train.seq_len=64")
    single = tmp_path / "single"
    res = run_cli("train", str(TINY), "--output-dir", str(single), *COMMON, *tok,
                  "--set", "train.batch_size=16", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]

    dp = tmp_path / "dp"
    res = run_cli("launch", "--nproc", "2", str(TINY), "--output-dir", str(dp), *COMMON, *tok,
                  "--set", "train.batch_size=8", timeout=300)
    logs = dp / "logs"
    worker = {r: (logs / f"worker_{r}.log").read_text() if (logs / f"worker_{r}.log").exists() else ""
              for r in (0, 1)}
    assert res.returncode == 0, res.stderr[-3000:] + worker[0][-3000:] + worker[1][-3000:]
    assert res.stdout.startswith(f"done: {STEPS} steps")  # rank 0's summary, relayed once

    a, b = _metrics(single), _metrics(dp)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))  # rank 0 only
    la, lb = np.array([r["loss"] for r in a]), np.array([r["loss"] for r in b])
    ga, gb = np.array([r["grad_norm"] for r in a]), np.array([r["grad_norm"] for r in b])
    print(f"max |loss diff| {np.abs(la - lb).max():.3g}; max rel grad-norm diff "
          f"{(np.abs(ga - gb) / ga).max():.3g}")
    np.testing.assert_allclose(lb, la, rtol=RTOL)
    np.testing.assert_allclose(gb, ga, rtol=RTOL)
    assert [r["lr"] for r in a] == [r["lr"] for r in b]

    # Only rank 0 saves; its weights match the single-process ones up to the same rounding noise.
    assert "saved checkpoint" in worker[0]
    assert "saved checkpoint" not in worker[1]
    assert sorted(p.name for p in (dp / "checkpoints").iterdir()) == [f"step-{STEPS:08d}"]
    wa = load_file(str(single / f"checkpoints/step-{STEPS:08d}/model.safetensors"))
    wb = load_file(str(dp / f"checkpoints/step-{STEPS:08d}/model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float(np.abs(wa[k] - wb[k]).max()) for k in wa) < 1e-4
    # Rank 0's loss matching the 16-row loss above shows the loss is all-reduced (an 8-row mean
    # is off by ~1e-2); the summary line is printed once, by rank 0.
    assert "done:" in worker[0] and "done:" not in worker[1]
