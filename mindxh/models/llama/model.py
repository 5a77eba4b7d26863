"""A dense decoder of the Llama / Qwen line, in MindSpore, readable in one sitting.

    tokens -> embedding -> L x [RMSNorm -> attention (RoPE, GQA) -> +residual,
                                RMSNorm -> SwiGLU MLP -> +residual] -> RMSNorm -> logits

Options follow the families: grouped-query attention (num_kv_heads < num_heads, Llama 2/3),
q/k/v bias (Qwen2), RMSNorm on q and k per head (Qwen3), tied or untied embeddings, and
DeepSeek-style mixture-of-experts MLPs (`cfg.moe`, moe.py) in place of the SwiGLU.
Only ops with CPU kernels in both PyNative and graph mode are used, in float32, so the same
cell trains on a laptop and compiles on Ascend. Weights start from a seeded NumPy generator,
which makes initialisation independent of the MindSpore mode and bitwise reproducible.
Weight layout is [out, in] like Hugging Face and mindformers, for checkpoint interchange.
One structure serves training and generation: `Decoder.construct` (the whole sequence) and
`Decoder.forward_cached` (generation with a key/value cache, driven by cache.py) share the
RoPE lookup (`_rope`), the embedding (`_embed`) and the layer loop (`_blocks`), and a Block
takes an optional `cache`: attention projects q/k/v, writes k/v into the cache and attends
over all of it when one is given, else attends over the k/v it just computed. `cache is None`
is a constant, so graph mode compiles only the branch in use.
"""
from __future__ import annotations

import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore import dtype as mstype

from mindxh.config.schema import ModelConfig, RopeScalingConfig
from mindxh.models.llama.rope import inv_frequencies

_MASKED = -1e9  # additive mask value: finite, so a fully masked row cannot produce NaN


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> Tensor:
    return Tensor(rng.normal(0.0, std, size=shape).astype(np.float32))


class Linear(nn.Cell):
    """y = x W^T (+ b), W of shape [out, in]."""

    def __init__(self, weight: Tensor, bias: bool = False):
        super().__init__()
        self.weight = Parameter(weight, name="weight")
        self.bias = Parameter(Tensor(np.zeros(weight.shape[0], np.float32)), name="bias") if bias else None
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        shape = x.shape
        y = self.matmul(x.reshape(-1, shape[-1]), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(shape[:-1] + (self.weight.shape[0],))


class RMSNorm(nn.Cell):
    """x / rms(x) * g (Zhang & Sennrich 2019), statistics in float32. Computed on rows
    [N, dim]: MindSpore's CPU reductions (here and in the gradient) are several times slower
    on 3-D/4-D tensors than on the same data in 2-D (docs/performance.md)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(dim, np.float32)), name="weight")
        self.eps = eps

    def construct(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        variance = ops.mean(x * x, -1, keep_dims=True)
        return (x * ops.rsqrt(variance + self.eps) * self.weight).reshape(shape)


def rope_tables(head_dim: int, max_len: int, theta: float,
                scaling: RopeScalingConfig | None = None) -> tuple[Tensor, Tensor]:
    """cos/sin tables [max_len, head_dim] for rotate-half RoPE (Su et al. 2021), with
    Llama 3.1 frequency scaling when `scaling.type` is llama3 (rope.py)."""
    inv_freq = inv_frequencies(head_dim, theta, scaling)
    angles = np.outer(np.arange(max_len, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return Tensor(np.cos(angles).astype(np.float32)), Tensor(np.sin(angles).astype(np.float32))


def apply_rope(x, cos, sin):
    """x: [B, heads, S, D]; cos/sin: [S, D], or [B, 1, S, D] for per-row positions."""
    half = x.shape[-1] // 2
    rotated = ops.concat((-x[..., half:], x[..., :half]), -1)
    return x * cos + rotated * sin


class Attention(nn.Cell):
    """Causal self-attention with grouped KV heads, computed without repeating K/V."""

    def __init__(self, cfg: ModelConfig, rng: np.random.Generator):
        super().__init__()
        h, d, kv = cfg.hidden_size, cfg.head_dim, cfg.num_kv_heads
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, kv, d
        self.group = cfg.num_heads // kv
        out_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
        self.wq = Linear(_normal(rng, (cfg.num_heads * d, h), cfg.init_std), cfg.qkv_bias)
        self.wk = Linear(_normal(rng, (kv * d, h), cfg.init_std), cfg.qkv_bias)
        self.wv = Linear(_normal(rng, (kv * d, h), cfg.init_std), cfg.qkv_bias)
        self.wo = Linear(_normal(rng, (h, cfg.num_heads * d), out_std))
        self.q_norm = RMSNorm(d, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(d, cfg.norm_eps) if cfg.qk_norm else None
        self.scale = 1.0 / math.sqrt(d)
        self.matmul_qk = ops.BatchMatMul(transpose_b=True)  # no transposed copy of K (or the cache)
        self.matmul_pv = ops.matmul  # an attribute so a precision policy can wrap it

    def project(self, x, cos, sin):
        """q [B, KV, G*S, D] (the heads of a KV group folded into the query length), k and v
        [B, KV, S, D], RoPE applied: split from `attend` so a key/value cache fits between."""
        b, s, _ = x.shape
        kv, g, d = self.num_kv_heads, self.group, self.head_dim
        q = self.wq(x).reshape(b, s, kv * g, d)
        k = self.wk(x).reshape(b, s, kv, d)
        v = self.wv(x).reshape(b, s, kv, d)
        if self.q_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = apply_rope(q.transpose(0, 2, 1, 3), cos, sin)  # [B, H, S, D]
        k = apply_rope(k.transpose(0, 2, 1, 3), cos, sin)  # [B, KV, S, D]
        # heads of one KV group share K/V: fold the group into the query length
        return q.reshape(b, kv, g * s, d), k, v.transpose(0, 2, 1, 3)

    def attend(self, q, k, v, mask):
        """Queries [B, KV, G*S, D] over T keys/values [B, KV, T, D] (T = S when training, the
        cache length when decoding); `mask` is additive, broadcast to [B, KV, G, S, T].
        Tuples of k, v and mask are blocks of keys under one softmax (a cache and its window)."""
        if isinstance(k, tuple):
            return self._attend_blocks(q, k, v, mask)
        b, kv, gs, _ = q.shape
        t = k.shape[2]
        g = self.group
        s = gs // g
        scores = self.matmul_qk(q, k) * self.scale  # [B, KV, G*S, T]
        scores = scores.reshape(b, kv, g, s, t) + mask
        probs = ops.softmax(scores, -1).reshape(b, kv, gs, t)
        return self._merge_heads(self.matmul_pv(probs, v))

    def _attend_blocks(self, q, ks, vs, masks):
        """`attend` over key blocks [B, KV, T_i, D]: the scores are joined for the softmax and
        the probabilities split again, so no block of keys or values is ever copied."""
        b, kv, gs, _ = q.shape
        g = self.group
        s = gs // g
        scores = [(self.matmul_qk(q, k) * self.scale).reshape(b, kv, g, s, k.shape[2]) + m
                  for k, m in zip(ks, masks)]
        probs = ops.softmax(ops.concat(scores, -1), -1).reshape(b, kv, gs, -1)
        out, start = None, 0
        for v in vs:
            t = v.shape[2]
            part = self.matmul_pv(probs[:, :, :, start:start + t], v)
            out, start = part if out is None else out + part, start + t
        return self._merge_heads(out)

    def _merge_heads(self, out):
        """[B, KV, G*S, D] (heads in q's order) -> the output projection of [B, S, H*D]."""
        b, kv, gs, d = out.shape
        s = gs // self.group
        out = out.reshape(b, kv * self.group, s, d)
        return self.wo(out.transpose(0, 2, 1, 3).reshape(b, s, kv * self.group * d))

    def construct(self, x, cos, sin, mask, cache=None, index=None):
        """With a `cache` (cache.LayerCache), the new keys/values are written at `index` first
        and the queries attend over what the cache returns: the whole cache (`mask` then spans
        the cache length), or the cache and its recent window (tuples of two blocks)."""
        q, k, v = self.project(x, cos, sin)
        if cache is not None:
            k, v = cache(index, k, v)
        return self.attend(q, k, v, mask)


class MLP(nn.Cell):
    """SwiGLU (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, rng: np.random.Generator, width: int | None = None):
        super().__init__()
        h, f = cfg.hidden_size, width or cfg.intermediate_size  # width: MoE shared experts
        self.gate = Linear(_normal(rng, (f, h), cfg.init_std))
        self.up = Linear(_normal(rng, (f, h), cfg.init_std))
        self.down = Linear(_normal(rng, (h, f), cfg.init_std / math.sqrt(2 * cfg.num_layers)))

    def construct(self, x):
        return self.down(ops.silu(self.gate(x)) * self.up(x))


class Block(nn.Cell):
    def __init__(self, cfg: ModelConfig, rng: np.random.Generator, index: int = 0):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = Attention(cfg, rng)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.moe = cfg.moe.is_moe_layer(index)
        if self.moe:  # imported here: moe.py builds on this module's Linear and MLP
            from mindxh.models.llama.moe import MoE

            self.mlp = MoE(cfg, rng)
        else:
            self.mlp = MLP(cfg, rng)

    def construct(self, x, cos, sin, mask, cache=None, index=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, index)
        return x + self.mlp(self.mlp_norm(x))

    def with_aux(self, x, cos, sin, mask):
        """A mixture-of-experts block's training forward: (output, its balance loss)."""
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        y, aux = self.mlp.with_aux(self.mlp_norm(x))
        return x + y, aux


class Decoder(nn.Cell):
    """The language model: token ids [B, S] -> logits [B, S, V]."""

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be set (resolve it from the tokenizer)")
        self.cfg = cfg
        rng = np.random.default_rng(seed)
        self.embed = Parameter(_normal(rng, (cfg.vocab_size, cfg.hidden_size), cfg.init_std),
                               name="embed.weight")
        self.layers = nn.CellList([Block(cfg, rng, i) for i in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else Linear(
            _normal(rng, (cfg.vocab_size, cfg.hidden_size), cfg.init_std))
        self.cos, self.sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta,
                                         cfg.rope_scaling)
        causal = np.triu(np.full((cfg.max_seq_len, cfg.max_seq_len), _MASKED, np.float32), 1)
        self.causal_mask = Tensor(causal)
        self.matmul_t = ops.MatMul(transpose_b=True)

    def construct(self, tokens, positions=None, segment_ids=None, with_aux=False):
        """`positions` [B, S] restart at 0 in each packed document; `segment_ids` [B, S] keep
        attention inside a document (tokens attend only to earlier tokens of the same id).
        `with_aux` (a constant: LossCell's training forward of a mixture-of-experts model)
        returns (logits, the MoE layers' summed balance loss) and drops tokens over an
        expert's capacity (moe.py); the plain forward routes every token."""
        b, s = tokens.shape
        cos, sin = self._rope(positions, s)
        mask = self.causal_mask[:s, :s]
        if segment_ids is not None:
            same = segment_ids.expand_dims(2) == segment_ids.expand_dims(1)  # [B, S, S]
            other_doc = (1.0 - same.astype(mstype.float32)) * _MASKED
            mask = (mask + other_doc).reshape(b, 1, 1, s, s)
        if with_aux:
            x, aux = self._blocks_aux(self._embed(tokens), cos, sin, mask)
            return self.logits(x), aux
        x = self._blocks(self._embed(tokens), cos, sin, mask)
        return self.logits(x)

    def forward_cached(self, tokens, positions, mask, caches, index):
        """Generation: tokens [B, S] at `positions` [B, S] -> hidden states [B, S, H] (before the
        final norm: the caller picks the rows it needs and calls `logits`). Each layer writes
        its keys/values into `caches[i]` at `index` and attends over the whole cache through
        `mask` [B, 1, 1, S, T]; cache.CachedDecoder owns the caches and builds mask and index."""
        cos, sin = self._rope(positions, tokens.shape[1])
        return self._blocks(self._embed(tokens), cos, sin, mask, caches, index)

    def _rope(self, positions, s):
        """cos/sin for the first `s` positions [S, D], or per token [B, 1, S, D]."""
        if positions is None:
            return self.cos[:s], self.sin[:s]
        cos = ops.gather(self.cos, positions, 0).expand_dims(1)
        sin = ops.gather(self.sin, positions, 0).expand_dims(1)
        return cos, sin

    def _embed(self, tokens):
        return ops.gather(self.embed, tokens, 0)

    def _blocks(self, x, cos, sin, mask, caches=None, index=None):
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, None if caches is None else caches[i], index)
        return x

    def _blocks_aux(self, x, cos, sin, mask):
        aux = 0.0
        for layer in self.layers:
            if layer.moe:
                x, layer_aux = layer.with_aux(x, cos, sin, mask)
                aux = aux + layer_aux
            else:
                x = layer(x, cos, sin, mask)
        return x, aux

    def logits(self, x):
        """Final norm and output head: hidden states [..., H] -> logits [..., V]."""
        x = self.norm(x)
        if self.lm_head is not None:
            return self.lm_head(x)
        h = x.shape[-1]
        return self.matmul_t(x.reshape(-1, h), self.embed).reshape(x.shape[:-1] + (-1,))


class LossCell(nn.Cell):
    """Mean next-token cross entropy (nats) over targets that are not `ignore_index` (-100;
    0 when there are none), plus, for a mixture-of-experts model, its balance loss (`moe` is
    a constant: a dense model compiles exactly the graph it always did)."""

    def __init__(self, model: Decoder):
        super().__init__()
        self.model = model
        self.moe = model.cfg.moe.enabled

    def construct(self, inputs, targets, positions=None, segment_ids=None, token_weight=None):
        """`token_weight` (train.step.TokenWeighted): the sum over loss tokens times it instead of
        the mean, so parts of a step weigh by their tokens and a part without any weighs 0."""
        if self.moe:
            logits, aux = self.model(inputs, positions, segment_ids, True)
            return self._cross_entropy(logits, targets, token_weight) + aux
        logits = self.model(inputs, positions, segment_ids)
        return self._cross_entropy(logits, targets, token_weight)

    def _cross_entropy(self, logits, targets, token_weight=None):
        vocab = logits.shape[-1]
        logits, targets = logits.reshape(-1, vocab), targets.reshape(-1)
        total = ops.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
        if token_weight is None:  # the mean; 0, not 0/0, for a batch without loss tokens (the
            # same as reduction="mean" bit for bit otherwise, and as a token-weighted step)
            return total / ops.maximum((targets != -100).astype(total.dtype).sum(), 1.0)
        return total * token_weight


def build_model(cfg: ModelConfig, seed: int) -> Decoder:
    return Decoder(cfg, seed)


__all__ = ["Decoder", "LossCell", "build_model", "rope_tables"]
