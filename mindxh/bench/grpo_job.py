"""GRPO child: a few steps of the tiny X1 recipe's GRPO stage, wall time split three ways.

The GRPO trainer (mindxh.rl.grpo) logs `sample_s`, `reward_s` and `update_s` (the policy
update, in the recipe's micro-batches) per step in metrics.jsonl; this job runs it and reads
them. The policy starts from a freshly initialised model (its speed does not depend on the
weights; the response lengths do, and are reported). Such a policy earns equal rewards
within nearly every group, and a run skips those groups' rows, so this job trains on every
group (`grpo.skip_uniform_groups=false`, zero advantages): the update then costs what a
batch of 128 rows with loss costs, the most a step of the recipe can cost. Validation
generations (before the first step, after the last) are not counted.
"""
from __future__ import annotations

import time
from pathlib import Path

from mindxh.bench.child import save_weights


def grpo(p: dict) -> dict:
    """p: recipe, steps, work (an empty directory)."""
    from mindxh.checkpoint import store as ckpt
    from mindxh.config import load_recipe, recipe_to_yaml
    from mindxh.models.llama.model import build_model
    from mindxh.pipeline.recipes import model_recipe
    from mindxh.rl import grpo as grpo_mod
    from mindxh.tasks.mix import heldout_problems
    from mindxh.train.metrics import read_metrics
    from mindxh.train.trainer import prepare_tokenizer

    work = Path(p["work"])
    steps = p["steps"]
    r = load_recipe(p["recipe"], [f"grpo.steps={steps}", "grpo.eval_every=0",
                                  f"grpo.checkpoint_every={steps}", "grpo.skip_uniform_groups=false"])
    t0 = time.perf_counter()
    tok = prepare_tokenizer(r, work)  # trains the recipe's tokenizer into work/tokenizer.model
    tokenizer_s = time.perf_counter() - t0
    r = model_recipe(r, work / "tokenizer.model", tok.vocab_size)
    init = build_model(r.model, r.seed)  # fresh weights, saved as the "SFT" checkpoint
    tensors = {name: prm.asnumpy() for name, prm in init.parameters_and_names()}
    init_dir = ckpt.save_checkpoint(work / "init", 0, tensors, {}, {}, recipe_to_yaml(r), 1)
    save_weights(work / "init.safetensors", tensors)  # for inspection only

    validation = heldout_problems(r.data.tasks, r.seed + 1, r.sft.level, 1)  # not timed here
    t0 = time.perf_counter()
    grpo_mod.GRPOTrainer(r, tok, init_dir, work / "grpo").run(validation)
    run_s = time.perf_counter() - t0
    records = [m for m in read_metrics(work / "grpo" / "metrics.jsonl") if "sample_s" in m]
    rows = []
    for rec in records:
        rows.append({"step": rec["step"], "sample_s": rec["sample_s"],
                     "reward_s": rec["reward_s"], "update_s": rec["update_s"],
                     "response_len": rec["response_len"], "groups_used": rec["groups_used"]})
    g = r.grpo
    return {"steps": rows, "tokenizer_s": tokenizer_s, "run_s": run_s,
            "rollouts_per_step": g.prompts_per_step * g.group_size,
            "max_new_tokens": g.max_new_tokens, "micro_batch_rows": g.micro_batch_rows,
            "recipe_steps": load_recipe(p["recipe"]).grpo.steps}
