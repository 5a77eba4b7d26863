"""Typed recipe sections.

Every key a recipe may hold is a field below, with its type and default. The loader
(`mindxh.config.loader`) turns YAML into these objects and rejects unknown keys and wrong
types; the `check()` methods reject impossible values, all before any compute starts.
A check raises `ValueError(key, message)`; the loader adds the file and line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from mindxh.config.errors import InvalidValue, InvalidValues
from mindxh.config.errors import require as _require
from mindxh.config.post_training import EvalConfig, GRPOConfig, PipelineConfig, SFTConfig
from mindxh.config.scale import (
    ClusterConfig,
    CompileConfig,
    ParallelConfig,
    PrecisionConfig,
    parallel_problems,
)


@dataclass
class RopeScalingConfig:
    """RoPE frequency scaling for long contexts. `type: llama3` is Llama 3.1's rule (low
    frequencies divided by `factor`, high ones kept, a smooth ramp between); null is plain RoPE.
    Typed here so a converted Hugging Face model's scaling is checked like any other key."""

    type: Optional[Literal["llama3"]] = None
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def check(self) -> None:
        if self.type is None:
            return
        _require(self.factor >= 1.0, "factor", "must be >= 1")
        _require(self.low_freq_factor > 0, "low_freq_factor", "must be > 0")
        _require(self.high_freq_factor > self.low_freq_factor, "high_freq_factor",
                 f"must be > low_freq_factor={self.low_freq_factor}")
        _require(self.original_max_position_embeddings > 0, "original_max_position_embeddings",
                 "must be a positive integer")


def expert_capacity(tokens: int, top_k: int, experts: int, factor: Optional[float]) -> int:
    """ceil(factor * tokens * top_k / experts) slots per expert. A token picks distinct experts,
    so no expert can receive more than `tokens`: that (factor null) is the no-drop capacity.
    Plain integer arithmetic on static shapes, so the model's graph calls it too."""
    if factor is None:
        return tokens
    return min(tokens, math.ceil(factor * tokens * top_k / experts))


@dataclass
class MoEConfig:
    """Mixture-of-experts MLPs, DeepSeek-style (mindxh/models/llama/moe.py): each token goes to
    `experts_per_token` of `num_experts` routed experts plus every shared expert. `num_experts: 0`
    (the default) is a dense model. Layers below `first_dense_layers` keep the dense MLP
    (DeepSeek-V2/V3 keep the first 1 and 3 layers dense: early routing is unstable).
    Balance: `aux_loss` adds coef * E * sum_i f_i * P_i (Switch/GShard) to the training loss;
    `bias` is DeepSeek-V3's auxiliary-loss-free rule (a per-expert bias on the selection
    scores, nudged by +-bias_update_rate after every step); `none` leaves routing alone."""

    num_experts: int = 0  # routed experts; 0: dense
    experts_per_token: int = 2  # top-k
    num_shared_experts: int = 0  # always-on experts, fused into one SwiGLU of k x the width
    expert_intermediate_size: Optional[int] = None  # null: model.intermediate_size
    first_dense_layers: int = 0
    scoring: Literal["softmax", "sigmoid"] = "softmax"  # sigmoid: DeepSeek-V3
    normalize_gates: bool = True  # the top-k gate weights sum to 1
    capacity_factor: Optional[float] = 1.25  # slots per expert = ceil(cf * tokens * k / E); null: no drops
    balance: Literal["aux_loss", "bias", "none"] = "aux_loss"
    aux_loss_coef: float = 0.01
    bias_update_rate: float = 0.001

    @property
    def enabled(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, index: int) -> bool:
        return self.enabled and index >= self.first_dense_layers

    def expert_width(self, intermediate_size: int) -> int:
        """One expert's SwiGLU width (`intermediate_size` is the model's dense width)."""
        return self.expert_intermediate_size or intermediate_size

    def capacity(self, tokens: int) -> int:
        """Slots per expert when `tokens` tokens are routed (see `expert_capacity`)."""
        return expert_capacity(tokens, self.experts_per_token, self.num_experts,
                               self.capacity_factor)

    def check(self) -> None:
        _require(self.num_experts >= 0, "num_experts", "must be >= 0 (0: a dense model)")
        _require(self.num_shared_experts >= 0, "num_shared_experts", "must be >= 0")
        _require(self.first_dense_layers >= 0, "first_dense_layers", "must be >= 0")
        _require(self.expert_intermediate_size is None or self.expert_intermediate_size > 0,
                 "expert_intermediate_size", "must be a positive integer (or null)")
        _require(self.capacity_factor is None or self.capacity_factor > 0, "capacity_factor",
                 "must be > 0 (or null: no token is dropped)")
        _require(self.aux_loss_coef >= 0, "aux_loss_coef", "must be >= 0")
        _require(self.bias_update_rate >= 0, "bias_update_rate", "must be >= 0")
        if self.enabled:
            _require(1 <= self.experts_per_token <= self.num_experts, "experts_per_token",
                     f"must be in 1..num_experts={self.num_experts}")


class _HeadDim:
    """`ModelConfig.head_dim`: null in a recipe means hidden_size // num_heads (the Llama rule),
    a number decouples it (Qwen3-0.6B: hidden 1024, 16 heads of 128). Reading it always gives
    an int, so the model code needs no special case; a saved recipe records the resolved int."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return None  # the dataclass default
        explicit = obj.__dict__.get("_head_dim")
        return explicit if explicit is not None else obj.hidden_size // obj.num_heads

    def __set__(self, obj, value) -> None:
        obj.__dict__["_head_dim"] = value


@dataclass
class ModelConfig:
    """A decoder of the Llama/Qwen line (see mindxh/models/llama/model.py), dense or with
    DeepSeek-style mixture-of-experts MLPs (`moe`)."""

    vocab_size: Optional[int] = None  # null: taken from the tokenizer
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4  # < num_heads: grouped-query attention
    intermediate_size: int = 384  # SwiGLU hidden width
    max_seq_len: int = 256  # RoPE table length
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3
    init_std: float = 0.02
    head_dim: Optional[int] = _HeadDim()  # type: ignore[assignment]  # null: hidden/heads
    rope_scaling: RopeScalingConfig = field(default_factory=RopeScalingConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)  # num_experts 0: dense

    @property
    def head_dim_is_explicit(self) -> bool:
        """True when head_dim was set rather than derived from hidden_size / num_heads."""
        return self.__dict__.get("_head_dim") is not None

    def check(self) -> None:
        for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                    "intermediate_size", "max_seq_len"):
            _require(getattr(self, key) > 0, key, "must be a positive integer")
        _require(self.vocab_size is None or self.vocab_size > 0, "vocab_size",
                 "must be positive (or null to take it from the tokenizer)")
        if self.head_dim_is_explicit:
            _require(self.head_dim > 0, "head_dim", "must be a positive integer (or null)")
            _require(self.head_dim % 2 == 0, "head_dim", f"head_dim={self.head_dim} must be even "
                     "for RoPE")
        else:
            _require(self.hidden_size % self.num_heads == 0, "num_heads",
                     f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}")
            _require(self.head_dim % 2 == 0, "num_heads",
                     f"head_dim = hidden_size/num_heads = {self.head_dim} must be even for RoPE")
        _require(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
                 f"num_kv_heads={self.num_kv_heads} does not divide num_heads={self.num_heads}")
        _require(self.rope_theta > 0, "rope_theta", "must be > 0")
        _require(self.norm_eps > 0, "norm_eps", "must be > 0")
        _require(self.init_std > 0, "init_std", "must be > 0")
        if self.moe.enabled:
            _require(self.moe.first_dense_layers < self.num_layers, "moe.first_dense_layers",
                     f"must be < num_layers={self.num_layers} (else no layer has experts)")


# The pieces a tokenizer mindxh trains holds before any learnt one (mindxh.tokenizer.spm:
# 256 byte-fallback pieces, <pad> <unk> <s> </s>, and the 4 reasoning tags; a test keeps the
# two in step): a vocabulary that small cannot hold even the corpus's characters.
TRAINED_VOCAB_FLOOR = 256 + 4 + 4


@dataclass
class TokenizerConfig:
    """A SentencePiece model: an existing file, or one trained on the run's data."""

    path: Optional[str] = None  # null: train one into OUTPUT_DIR/tokenizer.model
    vocab_size: int = 512
    model_type: Literal["bpe", "unigram"] = "bpe"
    train_documents: int = 20000  # documents of the data source used to train it

    def check(self) -> None:
        _require(self.vocab_size >= 16, "vocab_size", "must be >= 16")
        _require(self.path is not None or self.vocab_size > TRAINED_VOCAB_FLOOR, "vocab_size",
                 f"vocab_size={self.vocab_size} is too small to train a tokenizer: its 256 "
                 f"byte-fallback pieces and 8 control and reasoning pieces come first, then "
                 f"the corpus's characters; use more than {TRAINED_VOCAB_FLOOR}")
        _require(self.train_documents > 0, "train_documents", "must be > 0")


@dataclass
class DatasetConfig:
    """One prepared dataset (`mindxh data prepare` output) and its share of the mixture."""

    path: str  # the directory holding manifest.json and the MindRecord shards
    weight: float = 1.0  # relative share of training samples drawn from it

    def check(self) -> None:
        _require(self.weight > 0 and self.weight < float("inf"), "weight",
                 f"must be a positive number, got {self.weight}")
        _require(bool(self.path.strip()), "path", "must name a prepared dataset directory")


SYNTHETIC_TASKS = ("math", "code")  # = mindxh.tasks.mix.TASKS (a test keeps them equal)


@dataclass
class DataConfig:
    """Where tokens come from: `synthetic` (the embedded reasoning-text generator) or
    `prepared` (packed MindRecord datasets from `mindxh data prepare`, mixed by weight)."""

    source: Literal["synthetic", "prepared"] = "synthetic"
    levels: list[int] = field(default_factory=lambda: [1, 2])  # synthetic only
    # the synthetic tasks of the run (pretraining corpus, SFT, GRPO, evaluation), interleaved:
    # math (word problems), code (specs answered with a Python function)
    tasks: list[str] = field(default_factory=lambda: ["math"])
    heldout_batches: int = 4  # global batches of held-out rows for the eval loss
    datasets: list[DatasetConfig] = field(default_factory=list)  # prepared only
    eval_dataset: Optional[str] = None  # a held-out prepared dataset for the eval loss

    def check(self) -> None:
        _require(len(self.levels) > 0, "levels", "needs at least one level")
        _require(all(1 <= lv <= 3 for lv in self.levels), "levels",
                 f"levels must be in 1..3, got {self.levels}")
        bad = [t for t in self.tasks if t not in SYNTHETIC_TASKS]
        _require(self.tasks and not bad and len(set(self.tasks)) == len(self.tasks), "tasks",
                 f"must be distinct names among {list(SYNTHETIC_TASKS)}, got {self.tasks}")
        _require(self.heldout_batches >= 0, "heldout_batches", "must be >= 0")
        if self.source == "prepared":
            _require(len(self.datasets) > 0, "datasets",
                     "data.source=prepared needs at least one dataset: [{path: DIR, weight: 1.0}]")
        else:
            _require(not self.datasets, "datasets",
                     f"is only read when data.source is prepared (it is {self.source!r})")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to `lr * min_lr_ratio`."""

    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1  # on matrices (incl. embeddings), not on norm gains or biases
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clipping; 0 disables

    def check(self) -> None:
        _require(self.lr > 0, "lr", "must be > 0")
        _require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        _require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _require(0 <= self.beta1 < 1, "beta1", "must be in [0, 1)")
        _require(0 <= self.beta2 < 1, "beta2", "must be in [0, 1)")
        _require(self.eps > 0, "eps", "must be > 0")
        _require(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)")


@dataclass
class TrainConfig:
    """The loop: shapes, length, logging and checkpoint cadence."""

    seq_len: int = 128
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 300
    log_every: int = 10
    eval_every: int = 0  # held-out loss every N steps; 0: only at the end
    checkpoint_every: int = 100
    keep_last: int = 2
    init_from: Optional[str] = None  # a checkpoint or run dir: its weights start this run

    def check(self) -> None:
        for key in ("seq_len", "batch_size", "grad_accum", "max_steps", "log_every",
                    "checkpoint_every", "keep_last"):
            _require(getattr(self, key) > 0, key, "must be a positive integer")
        _require(self.eval_every >= 0, "eval_every", "must be >= 0")
        _require(self.init_from is None or bool(self.init_from.strip()), "init_from",
                 "must name a checkpoint or run directory (or be null)")


@dataclass
class MetricsConfig:
    """What MFU is measured against. `cpu` measures this CPU with a GEMM probe; accelerators
    come from the table in mindxh/config/hardware.py. `auto` means `cpu` when compile.device is
    CPU; on an accelerator the model must be named (a 910B2 and a 910B4 differ by 1.4x).
    `dtype` null follows precision.compute_dtype: the matmuls run in it, so its peak is the
    honest denominator (an fp16 run measured against the fp32 peak would overstate MFU)."""

    device: str = "auto"
    dtype: Optional[Literal["float32", "float16", "bfloat16"]] = None  # null: compute_dtype

    def peak_device(self, compile_device: str) -> str:
        return "cpu" if self.device == "auto" and compile_device == "CPU" else self.device

    def peak_dtype(self, precision: PrecisionConfig) -> str:
        return precision.compute_dtype if self.dtype is None else self.dtype


MAX_SEED = 2**31 - 1  # a run's streams are seed + offsets below 2**31: all fit in 32 bits


@dataclass
class Recipe:
    """One run, end to end. Sections are typed; see README's recipe reference."""

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs/run"
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def cross_checks(self) -> None:
        """Checks that span sections; keys are full dotted paths."""
        m, t = self.model, self.train
        _require(0 <= self.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED}] (MindSpore's "
                 "and NumPy's seeds are 32-bit, and the task streams add offsets to it)")
        _require(t.seq_len <= m.max_seq_len, "train.seq_len",
                 f"seq_len={t.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
        self._check_peak_device()
        if self.tokenizer.path is None:
            for used, key in ((self.data.source == "prepared", "data.source"),
                              (self.data.eval_dataset is not None, "data.eval_dataset")):
                _require(not used, "tokenizer.path",
                         f"{key} reads prepared datasets, so set tokenizer.path to the tokenizer "
                         "they were prepared with (a freshly trained one would not match them)")
        if m.vocab_size is not None and self.tokenizer.path is None:
            _require(m.vocab_size == self.tokenizer.vocab_size, "model.vocab_size",
                     f"model.vocab_size={m.vocab_size} differs from tokenizer.vocab_size="
                     f"{self.tokenizer.vocab_size}; set it to null to follow the tokenizer")
        problems = parallel_problems(self)
        if problems:
            raise InvalidValues(problems)

    def pipeline_checks(self) -> None:
        """Checks for `mindxh pipeline` only: the post-training sections are read there alone
        (a recipe for `mindxh train`, or a converted model's, may leave them at defaults that
        do not fit its model)."""
        m = self.model
        post = [s for s in ("sft", "grpo", "controls", "eval") if s in self.pipeline.stages]
        _require(not post or self.sft.seq_len <= m.max_seq_len, "sft.seq_len",
                 f"seq_len={self.sft.seq_len} exceeds model.max_seq_len={m.max_seq_len}, and the "
                 f"pipeline's {', '.join(post)} stage(s) train and generate in rows of sft.seq_len "
                 "tokens; lower it or leave those stages out of pipeline.stages")
        for stage, key, new in (("grpo", "grpo.max_new_tokens", self.grpo.max_new_tokens),
                                ("eval", "evaluation.max_new_tokens", self.evaluation.max_new_tokens)):
            _require(stage not in self.pipeline.stages or new < self.sft.seq_len, key,
                     f"{new} new tokens leave no room for a prompt in rows of sft.seq_len="
                     f"{self.sft.seq_len} tokens")

    def _check_peak_device(self) -> None:
        from mindxh.config.hardware import PEAK_FLOPS, lookup_peak

        device = self.metrics.peak_device(self.compile.device)
        if device == "auto":
            raise InvalidValue("metrics.device", f"name the accelerator for MFU on "
                               f"compile.device={self.compile.device}: one of {', '.join(PEAK_FLOPS)}")
        if device.lower() == "cpu":
            return
        try:
            lookup_peak(device, self.metrics.peak_dtype(self.precision))
        except (KeyError, ValueError) as exc:
            raise InvalidValue("metrics.device", str(exc.args[0])) from None
