"""Parameter and FLOP accounting of a decoder, and MFU (pure numpy).

The convention is chosen so MFU is comparable with PaLM, nanoGPT/nanochat and
torchtitan numbers; see :func:`flops_per_token`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["count_parameters", "flops_per_token", "mfu", "training_flops_per_token"]


def flops_per_token(
    n_params_non_embedding: int, n_layers: int, n_heads: int, head_dim: int, seq_len: int
) -> float:
    """Training FLOPs per token: ``6*N + 12*L*H*Q*T``.

    Convention (PaLM, Chowdhery et al. 2022, appendix B "Calculation of model
    FLOPs utilization"; also nanoGPT/nanochat), which keeps MFU comparable with
    PaLM/nanochat/torchtitan numbers:

    * Training = forward + backward = 3x forward; a matmul with P weights costs
      2*P FLOPs per token forward, hence ``6*N``.
    * ``N`` counts every weight used in a matmul. Exclude only the input
      embedding table (a lookup, not a matmul). Include the output projection
      (lm_head, vocab x d_model) in ``N`` whether or not it is tied to the input
      embedding, because it is a matmul either way. Norm gains and biases may
      be included; they are negligible.
    * ``12*L*H*Q*T`` is attention: QK^T and AV, each 2*T*Q FLOPs per token per
      head forward, times 3 for training. It counts the full T x T square;
      causal masking is NOT halved. ``H`` is the number of query heads, ``Q``
      the head dim, ``T`` the training sequence length.
    """
    for name, value in (
        ("n_params_non_embedding", n_params_non_embedding),
        ("n_layers", n_layers),
        ("n_heads", n_heads),
        ("head_dim", head_dim),
        ("seq_len", seq_len),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    return float(6 * n_params_non_embedding + 12 * n_layers * n_heads * head_dim * seq_len)


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over peak FLOP/s (0..1)."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}")
    return tokens_per_s * flops_per_token / peak_flops


def count_parameters(model) -> dict[str, int]:
    """Exact counts of the trainable parameters (an MoE layer's expert bias and routing
    statistics are state, not parameters). `non_embedding` excludes only the input lookup
    table; a tied head is the same matrix, so it counts in `total` once and its matmul is
    added back for FLOPs. `active` counts what one token uses: a mixture-of-experts layer's
    routed experts count `experts_per_token` of `num_experts` (shared experts, router and
    everything else count whole); for a dense model active == total."""
    sizes = {p.name: int(np.prod(p.shape)) for p in model.get_parameters() if p.requires_grad}
    total = sum(sizes.values())
    embedding = int(np.prod(model.embed.shape))
    routed = sum(n for name, n in sizes.items() if ".mlp.experts." in name)
    moe = model.cfg.moe
    inactive = routed - routed // moe.num_experts * moe.experts_per_token if routed else 0
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding,
            "active": total - inactive, "active_non_embedding": total - inactive - embedding}


def training_flops_per_token(cfg, params: dict[str, int], seq_len: int) -> float:
    """`flops_per_token` of a decoder with config `cfg` and `count_parameters` result `params`:
    the matmul weights are the active non-embedding ones (a token runs only its experts' and
    MFU counts only useful work) plus a tied head's (still a matmul)."""
    n_matmul = params.get("active_non_embedding", params["non_embedding"]) + (
        cfg.vocab_size * cfg.hidden_size if cfg.tie_embeddings else 0)
    return flops_per_token(n_matmul, cfg.num_layers, cfg.num_heads, cfg.head_dim, seq_len)
