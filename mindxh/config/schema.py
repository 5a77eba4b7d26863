"""Typed recipe sections.

Every key a recipe may hold is a field below, with its type and default. The loader
(`mindxh.config.loader`) turns YAML into these objects and rejects unknown keys and wrong
types; the `check()` methods reject impossible values, all before any compute starts.
A check raises `ValueError(key, message)`; the loader adds the file and line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from mindxh.config.errors import InvalidValue
from mindxh.config.errors import require as _require
from mindxh.config.stages import EvalConfig, GRPOConfig, PipelineConfig, SFTConfig


@dataclass
class ModelConfig:
    """A dense decoder of the Llama/Qwen line (see mindxh/models/llama/model.py)."""

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

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def check(self) -> None:
        for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                    "intermediate_size", "max_seq_len"):
            _require(getattr(self, key) > 0, key, "must be a positive integer")
        _require(self.vocab_size is None or self.vocab_size > 0, "vocab_size",
                 "must be positive (or null to take it from the tokenizer)")
        _require(self.hidden_size % self.num_heads == 0, "num_heads",
                 f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}")
        _require(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
                 f"num_kv_heads={self.num_kv_heads} does not divide num_heads={self.num_heads}")
        _require(self.head_dim % 2 == 0, "num_heads",
                 f"head_dim = hidden_size/num_heads = {self.head_dim} must be even for RoPE")
        _require(self.rope_theta > 0, "rope_theta", "must be > 0")
        _require(self.norm_eps > 0, "norm_eps", "must be > 0")
        _require(self.init_std > 0, "init_std", "must be > 0")


@dataclass
class TokenizerConfig:
    """A SentencePiece model: an existing file, or one trained on the run's data."""

    path: Optional[str] = None  # null: train one into OUTPUT_DIR/tokenizer.model
    vocab_size: int = 512
    model_type: Literal["bpe", "unigram"] = "bpe"
    train_documents: int = 20000  # documents of the data source used to train it

    def check(self) -> None:
        _require(self.vocab_size >= 16, "vocab_size", "must be >= 16")
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


@dataclass
class DataConfig:
    """Where tokens come from: `synthetic` (the embedded reasoning-text generator) or
    `prepared` (packed MindRecord datasets from `mindxh data prepare`, mixed by weight)."""

    source: Literal["synthetic", "prepared"] = "synthetic"
    levels: list[int] = field(default_factory=lambda: [1, 2])  # synthetic only
    heldout_batches: int = 4  # global batches of held-out rows for the eval loss
    datasets: list[DatasetConfig] = field(default_factory=list)  # prepared only
    eval_dataset: Optional[str] = None  # a held-out prepared dataset for the eval loss

    def check(self) -> None:
        _require(len(self.levels) > 0, "levels", "needs at least one level")
        _require(all(1 <= lv <= 3 for lv in self.levels), "levels",
                 f"levels must be in 1..3, got {self.levels}")
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
class CompileConfig:
    """How MindSpore executes: `graph` (compiled, the fast path) or `pynative` (debug)."""

    mode: Literal["graph", "pynative"] = "graph"
    jit_level: Literal["O0", "O1", "O2"] = "O0"
    device: Literal["CPU", "Ascend", "GPU"] = "CPU"


@dataclass
class ParallelConfig:
    """Parallel layout. Data parallel runs anywhere (msrun); the rest needs Ascend."""

    data_parallel: int = 1

    def check(self) -> None:
        _require(self.data_parallel >= 1, "data_parallel", "must be >= 1")


@dataclass
class MetricsConfig:
    """What MFU is measured against. `cpu` measures this CPU with a GEMM probe; accelerators
    come from the table in mindxh/config/hardware.py. `auto` means `cpu` when compile.device is
    CPU; on an accelerator the model must be named (a 910B2 and a 910B4 differ by 1.4x)."""

    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def peak_device(self, compile_device: str) -> str:
        return "cpu" if self.device == "auto" and compile_device == "CPU" else self.device


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
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def cross_checks(self) -> None:
        """Checks that span sections; keys are full dotted paths."""
        m, t = self.model, self.train
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

    def _check_peak_device(self) -> None:
        from mindxh.config.hardware import PEAK_FLOPS, lookup_peak

        device = self.metrics.peak_device(self.compile.device)
        if device == "auto":
            raise InvalidValue("metrics.device", f"name the accelerator for MFU on "
                               f"compile.device={self.compile.device}: one of {', '.join(PEAK_FLOPS)}")
        if device.lower() == "cpu":
            return
        try:
            lookup_peak(device, self.metrics.dtype)
        except (KeyError, ValueError) as exc:
            raise InvalidValue("metrics.device", str(exc.args[0])) from None
