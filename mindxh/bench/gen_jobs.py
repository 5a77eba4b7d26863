"""Generation children: greedy decoding of the same weights and prompts, three ways.

* `gen-mindxh` method `cached`: mindxh.generate.Generator (key/value cache, graph mode).
* `gen-mindxh` method `recompute`: no cache; each step runs the Decoder over a static
  [B, prompt + new] token buffer (one compiled graph, as the cache is) and reads the logits
  at each row's last token. Its cost per step does not depend on the position, so it is timed
  over at most `recompute_cap` steps and its tokens/s is B x steps / time (the rate of a
  full run); the full run at batch 32 and 256 tokens on `small` would take half an hour.
* `gen-hf`: transformers' `generate` (its dynamic KV cache, greedy) on LlamaForCausalLM
  holding the same weights.
Every case runs once untimed first (compilation, torch's first-call set-up), then once
timed. Decoding never stops early (no stop ids), so each case yields B x N tokens.
"""
from __future__ import annotations

import time

import numpy as np

from mindxh.bench import spec
from mindxh.bench.child import load_weights


class _NoStops:
    """A tokenizer stand-in for Generator: no id stops a row."""

    eos_id = -1
    answer_end_id = None
    vocab_size = spec.VOCAB

    def piece_to_id(self, piece: str) -> int:
        return -2

    def decode(self, ids) -> str:
        return ""


def prompts(batch: int) -> np.ndarray:
    return np.random.default_rng(1).integers(4, spec.VOCAB, (batch, spec.GEN_PROMPT)).astype(np.int32)


def _recompute_cell(model, length: int):
    from mindspore import nn, ops

    class Recompute(nn.Cell):
        """Full causal forward over [B, length]; logits at `last` [B] only."""

        def __init__(self):
            super().__init__(auto_prefix=False)
            self.model = model

        def construct(self, tokens, last):
            m = self.model
            b = tokens.shape[0]
            x = ops.gather(m.embed, tokens, 0)
            cos, sin, mask = m.cos[:length], m.sin[:length], m.causal_mask[:length, :length]
            for layer in m.layers:
                x = layer(x, cos, sin, mask)
            rows = ops.arange(b, dtype=last.dtype) * length + last
            return m.logits(ops.gather(x.reshape(b * length, x.shape[-1]), rows, 0))

    return Recompute()


def _run_recompute(cell, prompt: np.ndarray, new: int, steps: int) -> tuple[float, np.ndarray]:
    import mindspore as ms

    b, p = prompt.shape
    buf = np.zeros((b, p + new), np.int32)
    buf[:, :p] = prompt
    t0 = time.perf_counter()
    for i in range(steps):
        logits = cell(ms.Tensor(buf), ms.Tensor(np.full(b, p + i - 1, np.int32))).asnumpy()
        buf[:, p + i] = logits.argmax(-1)
    return time.perf_counter() - t0, buf[:, p:p + steps]


def gen_mindxh(p: dict) -> dict:
    """p: config, weights, method (cached | recompute), cases [[batch, new], ...], recompute_cap,
    graph_kernel (CPU graph-kernel fusion, configured as a fusing recipe's run configures it)."""
    import mindspore as ms

    from mindxh.bench.train_jobs import _mindxh_recipe
    from mindxh.checkpoint.store import assign_tensors
    from mindxh.generate import Generator, SamplingConfig
    from mindxh.models.llama.model import build_model
    from mindxh.train import runtime

    s = spec.shape(p["config"])
    runtime.configure(_mindxh_recipe(s, "graph", 1, p.get("graph_kernel", False)))
    longest = spec.GEN_PROMPT + max(n for _, n in p["cases"])
    model = build_model(spec.model_config(s, longest, spec.GEN_INIT_STD), seed=0)
    assign_tensors(load_weights(p["weights"]), model.parameters_and_names(), p["weights"])
    results = []
    for batch, new in p["cases"]:
        prompt = prompts(batch)
        if p["method"] == "cached":
            gen = Generator(model, _NoStops(), batch, spec.GEN_PROMPT + new)
            cfg = SamplingConfig(max_new_tokens=new, temperature=0.0)
            t0 = time.perf_counter()
            gen.generate(prompt.tolist(), cfg)  # compiles prefill and decode
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            ids = np.array([c.ids for c in gen.generate(prompt.tolist(), cfg)])
            wall, steps = time.perf_counter() - t0, new
        else:
            steps = min(new, p["recompute_cap"])
            cell = _recompute_cell(model, spec.GEN_PROMPT + new)
            first = _run_recompute(cell, prompt, new, 1)[0]  # compiles
            wall, ids = _run_recompute(cell, prompt, new, steps)
        results.append({"batch": batch, "new_tokens": new, "timed_steps": steps, "wall_s": wall,
                        "first_s": first, "tokens_per_s": batch * steps / wall,
                        "tokens": ids.tolist(),
                        "window": gen.cell.window if p["method"] == "cached" else None})
    fused = ", graph-kernel fusion" if p.get("graph_kernel") else ""
    return {"cases": results, "framework": f"mindspore {ms.__version__} (graph{fused})"}


def gen_hf(p: dict) -> dict:
    """p: config, weights, cases. transformers' generate, greedy, with its KV cache."""
    import torch
    import transformers

    from mindxh.bench.train_jobs import _hf_model

    s = spec.shape(p["config"])
    longest = spec.GEN_PROMPT + max(n for _, n in p["cases"])
    model = _hf_model(spec.model_config(s, longest, spec.GEN_INIT_STD), load_weights(p["weights"]))
    model.eval()
    results = []
    for batch, new in p["cases"]:
        ids = torch.from_numpy(prompts(batch).astype(np.int64))
        kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                      do_sample=False, use_cache=True, pad_token_id=0)
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(ids, **kwargs)  # untimed first call
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = model.generate(ids, **kwargs)
            wall = time.perf_counter() - t0
        results.append({"batch": batch, "new_tokens": new, "timed_steps": new, "wall_s": wall,
                        "first_s": first, "tokens_per_s": batch * new / wall,
                        "tokens": out[:, spec.GEN_PROMPT:].tolist()})
    return {"cases": results, "framework": f"torch {torch.__version__}, transformers "
            f"{transformers.__version__}, {torch.get_num_threads()} threads"}
