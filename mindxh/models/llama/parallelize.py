"""How the Llama / Qwen decoder (model.py) is split over devices: the family's plan, as data.

model.py stays plain; mindxh/parallel/parallelize.py reads these tables, finds the cells
and primitives they name in a built Decoder and attaches strategies, stages and recompute
flags, and mindxh/parallel/simulate.py replays the same tables in NumPy to check that the
split computes the same logits. Paths are `Decoder.cells_and_names()` names with `*` for a
layer index; a path that ends in a primitive attribute (`matmul_qk`, `matmul_t`) names that
primitive, any other path names a `Linear` cell (its `matmul` primitive and its weight).

Styles (Megatron-LM, Shoeybi et al. 2019), for Linear's y = x W^T with W [out, in]:
  colwise    W split on `out`; input replicated, output split on its last axis (no collective)
  rowwise    W split on `in`; input split on its last axis, output partial sums -> all-reduce
  heads      attention core on the local heads: q/k/v arrive split by KV head from colwise
             wq/wk/wv (query head h belongs to KV head h // group, so contiguous splits agree)
  vocab_out  output head: W [vocab, hidden] split on vocab when parallel.vocab_parallel
             (logits all-gathered, or a vocab-parallel cross entropy), else replicated
The pairing colwise -> (local heads / SwiGLU) -> rowwise needs one all-reduce per pair and
nothing in between: two per layer.

Mixture-of-experts layers (moe.py) add, in MOE_PLAN (applied only to a model with experts):
  router          the routing Linear, replicated: every rank scores its tokens for all experts
  expert_colwise  the experts' w1/w3 (BatchMatMul of x [E, C, H] by W [E, F, H]): experts
                  split over `parallel.expert` ranks, each expert's F over `tensor`
  expert_rowwise  w2 (x [E, C, F] by W [E, H, F]): F split on both, partial sums all-reduced
                  over `tensor`
Tokens arrive split by data parallel and the experts' inputs [E, C, H] are split by expert:
the dispatch scatter and the combine gather between them are where the all-to-all goes
(MindSpore's redistribution inserts it; see FUNCTIONAL). The shared experts are a plain MLP
(colwise / rowwise).
"""
from __future__ import annotations

# tensor parallel: path -> style (primitives with a strategy; Linear weights with a split)
TENSOR_PLAN: dict[str, str] = {
    "layers.*.attn.wq": "colwise",
    "layers.*.attn.wk": "colwise",
    "layers.*.attn.wv": "colwise",
    "layers.*.attn.matmul_qk": "heads",
    "layers.*.attn.wo": "rowwise",
    "layers.*.mlp.gate": "colwise",
    "layers.*.mlp.up": "colwise",
    "layers.*.mlp.down": "rowwise",
    "lm_head": "vocab_out",  # untied head (a Linear)
    "matmul_t": "vocab_out",  # tied head: x @ embed^T, a primitive of the Decoder itself
}

# mixture of experts: path -> style, for models whose config has experts
MOE_PLAN: dict[str, str] = {
    "layers.*.mlp.router": "router",
    "layers.*.mlp.experts.w1": "expert_colwise",
    "layers.*.mlp.experts.w3": "expert_colwise",
    "layers.*.mlp.experts.w2": "expert_rowwise",
    "layers.*.mlp.shared.gate": "colwise",
    "layers.*.mlp.shared.up": "colwise",
    "layers.*.mlp.shared.down": "rowwise",
}

# sequence parallel: activations between the row- and column-parallel pairs split along the
# sequence; rowwise outputs then reduce-scatter instead of all-reduce
SEQUENCE_PLAN: dict[str, str] = {
    "layers.*.attn_norm": "sequence",
    "layers.*.mlp_norm": "sequence",
    "norm": "sequence",
}

# ops model.py calls as functions, so there is no primitive to carry a strategy: where each
# is and what it would need (MindSpore gives them its default strategy and redistributes)
FUNCTIONAL: dict[str, str] = {
    "Decoder._embed": "ops.gather(embed, tokens): ((tp, 1), (dp, 1)) vocab-parallel, else "
                      "((1, 1), (dp, 1))",
    "Attention.attend": "ops.softmax on [B, KV, G, S, T]: (dp, tp, 1, 1, 1); ops.matmul(probs, v): "
                        "((dp, tp, 1, 1), (dp, tp, 1, 1)); the scale and mask adds likewise",
    "apply_rope": "ops.concat and * on [B, heads, S, D]: (dp, tp, 1, 1)",
    "Linear.construct": "the q/k/v bias add (qkv_bias): ((dp, tp), (tp,))",
    "MLP.construct": "ops.silu and * on [B, S, F]: (dp, 1, tp)",
    "RMSNorm.construct": "x * x, ops.mean, ops.rsqrt, *: (dp, 1, 1), or (dp, tp, 1) under "
                         "sequence parallel",
    "MoE._forward": "softmax/topk/one_hot/cumsum on scores [T, E]: (dp, 1); ops.scatter_nd "
                    "(dispatch) of rows [k*T, H] split (dp, 1) into slots [E*C, H] split (ep, 1): "
                    "the all-to-all to the experts; ops.gather (combine) the all-to-all back",
    "Experts.construct": "ops.silu and * on [E, C, F]: (ep, dp/ep, tp)",
}

# pipeline: `layers` split evenly in order; "" is the Decoder (embedding lookup) on stage 0
PIPELINE_LAYERS = "layers"
PIPELINE_FIRST: tuple[str, ...] = ("",)
PIPELINE_LAST: tuple[str, ...] = ("norm", "lm_head")

# recompute: `full` recomputes each block; `selective` the attention of each block. The
# attention core (QK^T, softmax, @V) is code inside Attention.attend, not a cell, and
# softmax / @V are functional, so the narrowest cell holding it is the whole attention
# (its q/k/v/o projections are recomputed too)
RECOMPUTE: dict[str, tuple[str, ...]] = {
    "full": ("layers.*",),
    "selective": ("layers.*.attn",),
}

__all__ = ["FUNCTIONAL", "MOE_PLAN", "PIPELINE_FIRST", "PIPELINE_LAST", "PIPELINE_LAYERS", "RECOMPUTE",
           "SEQUENCE_PLAN", "TENSOR_PLAN"]
