"""mindxh <-> Hugging Face tensor names for the Llama family (Llama 2/3, Qwen2, Qwen3).

Same idea as torchtitan's `StateDictAdapter`: the model keeps its own short names and the
adapter is the single place that knows the other side's. No layout transform is needed:
both sides store Linear weights as [out, in] and apply RoPE by rotating halves (Hugging Face's
`rotate_half`; Meta's original interleaved checkpoints are not read here).
`expected_shapes` gives the model's names and shapes without building it, so a converter can
check a multi-gigabyte checkpoint before allocating a MindSpore model.
"""
from __future__ import annotations

import re

from mindxh.config.schema import ModelConfig

# mindxh name template -> Hugging Face name template; {i} is the layer index
_LAYER = {
    "layers.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.attn.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.attn.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.attn.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.attn.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.attn.wq.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "layers.{i}.attn.wk.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "layers.{i}.attn.wv.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "layers.{i}.attn.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "layers.{i}.attn.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "layers.{i}.mlp_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.mlp.gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.mlp.up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "layers.{i}.mlp.down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_GLOBAL = {
    "embed": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


_TO_HF = [(_pattern(m), h) for m, h in _LAYER.items()]
_FROM_HF = [(_pattern(h), m) for m, h in _LAYER.items()]


def _rename(name: str, table: dict[str, str], patterns: list) -> str | None:
    if name in table:
        return table[name]
    for pattern, template in patterns:
        match = pattern.match(name)
        if match:
            return template.format(i=match.group(1))
    return None


def to_hf_name(name: str) -> str | None:
    """The Hugging Face name of a mindxh tensor, or None for a name the family lacks."""
    return _rename(name, _GLOBAL, _TO_HF)


def from_hf_name(name: str) -> str | None:
    """The mindxh name of a Hugging Face tensor, or None for a name the family lacks."""
    return _rename(name, {h: m for m, h in _GLOBAL.items()}, _FROM_HF)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter `Decoder(cfg)` has, by its mindxh name, with its shape."""
    if cfg.vocab_size is None:
        raise ValueError("expected_shapes needs model.vocab_size")
    h, d, f, v = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_heads * d, cfg.num_kv_heads * d
    layer = {
        "attn_norm.weight": (h,), "attn.wq.weight": (q, h), "attn.wk.weight": (kv, h),
        "attn.wv.weight": (kv, h), "attn.wo.weight": (h, q), "mlp_norm.weight": (h,),
        "mlp.gate.weight": (f, h), "mlp.up.weight": (f, h), "mlp.down.weight": (h, f),
    }
    if cfg.qkv_bias:
        layer.update({"attn.wq.bias": (q,), "attn.wk.bias": (kv,), "attn.wv.bias": (kv,)})
    if cfg.qk_norm:
        layer.update({"attn.q_norm.weight": (d,), "attn.k_norm.weight": (d,)})
    shapes: dict[str, tuple[int, ...]] = {"embed": (v, h)}
    for i in range(cfg.num_layers):
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    shapes["norm.weight"] = (h,)
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (v, h)
    return shapes


__all__ = ["expected_shapes", "from_hf_name", "to_hf_name"]
