"""What every peer measures: model shapes, optimizer, data and FLOPs, defined once.

The parent and every child process (mindxh, torch and mindformers alike) read this module, so
"identical architecture, shapes, dtype and optimizer" holds by construction instead of by
several copies staying in sync. No framework is imported here: the torch children and the
mindformers venv (another mindspore) import it too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mindxh.config.schema import ModelConfig, OptimConfig

VOCAB = 512
FFN_RATIO, FFN_MULTIPLE = 2.75, 32  # intermediate = 2.75 x hidden rounded to a multiple of 32
INIT_STD = 0.02
TRAIN_PEERS = ("mindxh-graph", "mindxh-graph-fused", "mindxh-pynative", "torch-eager",
               "torch-compile", "mindformers")
BASELINE = "mindxh-graph"  # every ratio is against this row
GEN_PROMPT = 32  # prompt tokens (one prefill bucket)
GEN_NEW = (64, 256)
GEN_BATCH = (1, 32)
GEN_INIT_STD = 0.1  # wider than training's: distinct argmaxes, so greedy tokens can be compared
# AdamW hyper-parameters shared by every peer; a constant learning rate (no warm-up, no decay)
# so the schedule costs nothing anyone else does not pay. Weight decay on matrices only.
OPTIM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
         "grad_clip": 1.0}


@dataclass(frozen=True)
class Shape:
    """One benchmark configuration: a Llama and the batch it trains on."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    seq: int
    batch: int

    @property
    def intermediate(self) -> int:
        return int(round(self.hidden * FFN_RATIO / FFN_MULTIPLE)) * FFN_MULTIPLE

    def describe(self, batch: bool = True) -> str:
        text = (f"hidden {self.hidden}, {self.layers} layers, {self.heads} heads / {self.kv_heads} KV, "
                f"FFN {self.intermediate}")
        return text + (f", seq {self.seq}, batch {self.batch}" if batch else "")


CONFIGS = {
    "tiny": Shape("tiny", hidden=128, layers=2, heads=4, kv_heads=4, seq=128, batch=8),
    "medium": Shape("medium", hidden=256, layers=4, heads=4, kv_heads=2, seq=256, batch=8),
    "small": Shape("small", hidden=512, layers=8, heads=8, kv_heads=8, seq=512, batch=4),
}


def shape(name: str) -> Shape:
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; expected one of {', '.join(CONFIGS)}")
    return CONFIGS[name]


def model_config(s: Shape, max_seq_len: int | None = None, init_std: float = INIT_STD) -> ModelConfig:
    """The mindxh ModelConfig of `s` (untied head, as Llama 2 and mindformers' default)."""
    return ModelConfig(vocab_size=VOCAB, hidden_size=s.hidden, num_layers=s.layers,
                       num_heads=s.heads, num_kv_heads=s.kv_heads, intermediate_size=s.intermediate,
                       max_seq_len=max_seq_len or s.seq, tie_embeddings=False, init_std=init_std)


def optim_config() -> OptimConfig:
    o = OPTIM
    return OptimConfig(lr=o["lr"], min_lr_ratio=1.0, warmup_steps=0, weight_decay=o["weight_decay"],
                       beta1=o["beta1"], beta2=o["beta2"], eps=o["eps"], grad_clip=o["grad_clip"])


def token_batches(s: Shape, count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """`count` int32 [batch, seq + 1] rows of ids in [1, VOCAB) (0 is mindformers' pad id,
    which it would mask out of the loss): inputs are [:, :-1], targets [:, 1:]."""
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, (s.batch, s.seq + 1), dtype=np.int32) for _ in range(count)]


def flops_per_token(s: Shape) -> float:
    """Training FLOPs per token by the README's MFU convention (mindxh.models.accounting)."""
    from mindxh.models.accounting import training_flops_per_token
    from mindxh.models.llama.state_dict_adapter import expected_shapes

    cfg = model_config(s)
    shapes = expected_shapes(cfg)
    total = sum(int(np.prod(v)) for v in shapes.values())
    embedding = int(np.prod(shapes["embed"]))
    params = {"total": total, "embedding": embedding, "non_embedding": total - embedding}
    return training_flops_per_token(cfg, params, s.seq)


def parameter_count(s: Shape) -> int:
    from mindxh.models.llama.state_dict_adapter import expected_shapes

    return sum(int(np.prod(v)) for v in expected_shapes(model_config(s)).values())
