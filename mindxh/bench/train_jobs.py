"""Train-step children: the same Llama, batch and AdamW in each framework, timed step by step.

Each job loads the weights file the parent made (`child.job_weights`), so every peer starts
from identical numbers and the first-step losses must agree: that is the check that the
architectures really are the same. Loss is mean next-token cross entropy over inputs
[:, :-1] and targets [:, 1:]; no packing masks (the trainer's per-document masks are a data
feature, not part of the model comparison).
"""
from __future__ import annotations

import os

import numpy as np

from mindxh.bench import spec
from mindxh.bench.child import load_weights, time_steps


def _mindxh_recipe(s: spec.Shape, mode: str, steps: int, graph_kernel: bool = False):
    from mindxh.config import CompileConfig, Recipe, TrainConfig

    return Recipe(name=f"bench-{s.name}", model=spec.model_config(s), optim=spec.optim_config(),
                  train=TrainConfig(seq_len=s.seq, batch_size=s.batch, max_steps=steps),
                  compile=CompileConfig(mode=mode, enable_graph_kernel=graph_kernel))


def train_mindxh(p: dict) -> dict:
    """The real train step, built as mindxh.train.trainer builds it: runtime.configure,
    build_model, LossCell, AdamW (mindxh.train.optim), TrainStep (mindxh.train.step)."""
    import mindspore as ms

    from mindxh.checkpoint.store import assign_tensors
    from mindxh.models.llama.model import LossCell, build_model
    from mindxh.train import runtime
    from mindxh.train.optim import AdamW
    from mindxh.train.step import TrainStep

    s = spec.shape(p["config"])
    r = _mindxh_recipe(s, p["mode"], p["warmup"] + p["steps"], p.get("graph_kernel", False))
    runtime.configure(r)
    model = build_model(r.model, r.seed)
    assign_tensors(load_weights(p["weights"]), model.parameters_and_names(), p["weights"])
    step_cell = TrainStep(LossCell(model), AdamW(model.trainable_params(), r.optim, r.train.max_steps))

    def step(rows: np.ndarray) -> float:
        loss, _, _, ok = step_cell(ms.Tensor(rows[:, :-1]), ms.Tensor(rows[:, 1:]))
        return float(loss.asnumpy())

    out = time_steps(step, spec.token_batches(s), p["warmup"], p["steps"])
    fused = ", graph-kernel fusion" if r.compile.enable_graph_kernel else ""
    out["framework"] = f"mindspore {ms.__version__} ({p['mode']}{fused})"
    return out


def _hf_model(cfg, weights: dict[str, np.ndarray]):
    """transformers' LlamaForCausalLM for a mindxh ModelConfig, holding mindxh's weights:
    config through mindxh's own converter (interop.hf_config), names through the state-dict
    adapter. Strict loading: a missing or extra tensor is an error, not a silent init."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mindxh.interop.hf_config import hf_config_from_model
    from mindxh.models.llama.state_dict_adapter import to_hf_name

    hf_cfg = hf_config_from_model(cfg, "float32", None, None)
    model = LlamaForCausalLM(LlamaConfig(**hf_cfg))
    state = {to_hf_name(k): torch.from_numpy(np.array(v)) for k, v in weights.items()}
    model.load_state_dict(state, strict=True)
    model.generation_config.eos_token_id = None  # never stop early: fixed token counts
    return model.float()


def train_torch(p: dict) -> dict:
    """Hugging Face LlamaForCausalLM on torch CPU eager (or `torch.compile` of it) with
    torch.optim.AdamW and clip_grad_norm_: the usual PyTorch training loop."""
    import torch
    import transformers

    s = spec.shape(p["config"])
    cfg = spec.model_config(s)
    torch.manual_seed(0)
    model = _hf_model(cfg, load_weights(p["weights"]))
    model.train()
    o = spec.OPTIM
    decay = [q for q in model.parameters() if q.ndim >= 2]  # as mindxh.train.optim.decays
    rest = [q for q in model.parameters() if q.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    forward = torch.compile(model) if p["compile"] else model

    def step(rows: np.ndarray) -> float:
        ids = torch.from_numpy(rows)
        logits = forward(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 ids[:, 1:].reshape(-1).long())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    out = time_steps(step, spec.token_batches(s), p["warmup"], p["steps"])
    out["framework"] = (f"torch {torch.__version__}, transformers {transformers.__version__}, "
                        f"{torch.get_num_threads()} threads, attention "
                        f"{model.config._attn_implementation}" + (", torch.compile" if p["compile"] else ""))
    return out


def train_mindformers(p: dict) -> dict:
    """mindformers' legacy LlamaForCausalLM in graph mode (run with .venv-mf's python). It has
    CPU kernels only without flash attention or fused RMSNorm and with sliced RoPE (the
    settings mindxh.interop.mindformers_config writes); MFTrainOneStepCell needs an Ascend
    op, so the step is mindxh's TrainStep + AdamW around mindformers' loss-returning model:
    the optimizer is identical to the mindxh row's and only the model differs."""
    os.environ.setdefault("LOCAL_DEFAULT_PATH", p["log_dir"])  # where mindformers logs
    import mindformers
    import mindspore as ms
    from mindformers import LlamaConfig, LlamaForCausalLM

    from mindxh.interop.mindformers import mindxh_to_mindformers_tensors
    from mindxh.interop.mindformers_config import mindformers_config_from_model
    from mindxh.train.optim import AdamW
    from mindxh.train.step import TrainStep

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    s = spec.shape(p["config"])
    cfg = spec.model_config(s)
    settings = {k: v for k, v in mindformers_config_from_model(cfg).items() if k != "type"}
    net = LlamaForCausalLM(LlamaConfig(batch_size=s.batch, **settings))
    tensors = mindxh_to_mindformers_tensors(load_weights(p["weights"]), cfg)
    params = dict(net.parameters_and_names())
    missing = sorted(set(params) ^ set(tensors))
    if missing:
        raise RuntimeError(f"mindformers parameter names differ from the converted ones: {missing[:6]}")
    for name, param in params.items():
        param.set_data(ms.Tensor(tensors[name]))
    net.set_train(True)
    step_cell = TrainStep(net, AdamW(net.trainable_params(), spec.optim_config(),
                                     p["warmup"] + p["steps"]))

    def step(rows: np.ndarray) -> float:  # training mode: the model shifts [B, S+1] itself
        loss = step_cell(ms.Tensor(rows))[0]
        return float(loss.asnumpy())

    out = time_steps(step, spec.token_batches(s), p["warmup"], p["steps"])
    out["framework"] = f"mindformers {mindformers.__version__}, mindspore {ms.__version__} (graph)"
    return out
