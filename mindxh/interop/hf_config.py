"""Hugging Face `config.json` <-> `ModelConfig`, for Llama 2/3/3.1, Qwen2/2.5 and Qwen3.

Strict on purpose: a field mindxh does not model (sliding windows, another activation, biases
where the model has none, unknown RoPE scaling, quantisation...) would silently change the
math, so every key of config.json is either mapped, known not to matter for the forward pass,
or an `UnsupportedConfigError` naming it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mindxh.config.schema import ModelConfig, RopeScalingConfig
from mindxh.errors import MindxhError


class ConversionError(MindxhError, ValueError):
    """A checkpoint that cannot be converted as asked (files, tensors, shapes)."""


class UnsupportedConfigError(ConversionError):
    """A config.json field whose value mindxh's decoder cannot reproduce."""


# model_type -> (architecture, defaults the family's config class applies when a key is absent)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaForCausalLM", {"rope_theta": 10000.0, "rms_norm_eps": 1e-6,
                                   "max_position_embeddings": 2048}),
    "qwen2": ("Qwen2ForCausalLM", {"rope_theta": 10000.0, "rms_norm_eps": 1e-6,
                                   "max_position_embeddings": 32768}),
    "qwen3": ("Qwen3ForCausalLM", {"rope_theta": 10000.0, "rms_norm_eps": 1e-6,
                                   "max_position_embeddings": 32768, "head_dim": 128}),
}
_MAPPED = {"model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size",
           "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
           "max_position_embeddings", "rope_theta", "rope_scaling", "rms_norm_eps",
           "tie_word_embeddings", "hidden_act", "attention_bias", "mlp_bias", "use_sliding_window",
           "sliding_window", "max_window_layers", "layer_types", "initializer_range", "use_mrope"}
# no effect on the forward pass in float32 inference (ids, bookkeeping, training-only dropout)
_IGNORED = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache",
            "bos_token_id", "eos_token_id", "pad_token_id", "attention_dropout", "pretraining_tp",
            "output_attentions", "output_hidden_states", "return_dict", "is_decoder",
            "_attn_implementation_autoset"}
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _refuse(where: str, key: str, value: Any, why: str) -> UnsupportedConfigError:
    return UnsupportedConfigError(f"{where}: field '{key}' = {value!r} is not supported: {why}")


def _rope_scaling(raw: Any, where: str) -> RopeScalingConfig:
    if raw is None:
        return RopeScalingConfig()
    if not isinstance(raw, dict):
        raise _refuse(where, "rope_scaling", raw, "expected null or a mapping")
    kind = raw.get("rope_type", raw.get("type"))
    if kind in (None, "default"):
        return RopeScalingConfig()
    if kind != "llama3":
        raise _refuse(where, "rope_scaling.rope_type", kind, "mindxh implements only 'llama3' "
                      "(Llama 3.1) scaling; linear, dynamic, yarn, longrope... are not")
    for key in raw:
        if key not in (*LLAMA3_KEYS, "rope_type", "type"):
            raise _refuse(where, f"rope_scaling.{key}", raw[key], "unknown llama3 scaling key")
    missing = [k for k in LLAMA3_KEYS if k not in raw]
    if missing:
        needs = ", ".join(LLAMA3_KEYS)
        raise UnsupportedConfigError(f"{where}: field 'rope_scaling.{missing[0]}' is missing "
                                     f"(llama3 scaling needs all of {needs})")
    return llama3_scaling(raw)


def llama3_scaling(raw: dict) -> RopeScalingConfig:
    """mindxh's llama3 RoPE scaling from a checked dict of `LLAMA3_KEYS` (HF and mindformers
    name the four values alike)."""
    return RopeScalingConfig(type="llama3", factor=float(raw["factor"]),
                             low_freq_factor=float(raw["low_freq_factor"]),
                             high_freq_factor=float(raw["high_freq_factor"]),
                             original_max_position_embeddings=int(
                                 raw["original_max_position_embeddings"]))


def _check_fields(cfg: dict, model_type: str, where: str) -> None:
    for key in cfg:
        if key not in _MAPPED and key not in _IGNORED:
            raise UnsupportedConfigError(f"{where}: field '{key}' is not supported by mindxh "
                                         "convert (it may change the model's math)")
    arch = FAMILIES[model_type][0]
    if cfg.get("architectures") not in (None, [arch]):
        raise _refuse(where, "architectures", cfg["architectures"], f"expected [{arch!r}]")
    if cfg.get("hidden_act", "silu") != "silu":
        raise _refuse(where, "hidden_act", cfg["hidden_act"], "the MLP is SwiGLU (silu)")
    if cfg.get("mlp_bias", False):
        raise _refuse(where, "mlp_bias", True, "the MLP projections have no bias")
    if cfg.get("attention_bias", False):
        raise _refuse(where, "attention_bias", True, "it puts a bias on o_proj, which mindxh's "
                      "attention lacks (q/k/v bias alone is Qwen2's, model_type qwen2)")
    if cfg.get("use_sliding_window", False):
        raise _refuse(where, "use_sliding_window", True, "attention is always full")
    if cfg.get("use_mrope", False):
        raise _refuse(where, "use_mrope", True, "multimodal RoPE is not implemented")
    kinds = set(cfg.get("layer_types") or ["full_attention"])
    if kinds != {"full_attention"}:
        raise _refuse(where, "layer_types", sorted(kinds), "every layer must be full_attention")


def model_config_from_hf(cfg: dict, where: str | Path = "config.json",
                         max_seq_len: int | None = None) -> ModelConfig:
    """The ModelConfig reproducing a Hugging Face config; `max_seq_len` caps the RoPE/mask
    tables (a 128k-token mask would not fit in memory), default the model's own length."""
    where = str(where)
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise _refuse(where, "model_type", model_type,
                      f"supported: {', '.join(sorted(FAMILIES))}")
    _check_fields(cfg, model_type, where)
    defaults = FAMILIES[model_type][1]
    get = lambda key: cfg.get(key, defaults.get(key))
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads"):
        if not isinstance(cfg.get(key), int):
            raise UnsupportedConfigError(f"{where}: field '{key}' is missing or not an integer")
    heads = cfg["num_attention_heads"]
    head_dim = get("head_dim")
    for key in ("max_position_embeddings", "rope_theta", "rms_norm_eps", "initializer_range"):
        value = get(key) if key != "initializer_range" else cfg.get(key, 0.02)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UnsupportedConfigError(f"{where}: field '{key}' is {value!r}, not a number")
    if head_dim is not None and (isinstance(head_dim, bool) or not isinstance(head_dim, int)):
        raise UnsupportedConfigError(f"{where}: field 'head_dim' is {head_dim!r}, not an integer")
    positions = int(get("max_position_embeddings"))
    return ModelConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"], num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        intermediate_size=cfg["intermediate_size"],
        max_seq_len=min(positions, max_seq_len) if max_seq_len else positions,
        rope_theta=float(get("rope_theta")), norm_eps=float(get("rms_norm_eps")),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2", qk_norm=model_type == "qwen3",
        init_std=float(cfg.get("initializer_range", 0.02)),
        head_dim=head_dim if head_dim is not None else cfg["hidden_size"] // heads,
        rope_scaling=_rope_scaling(cfg.get("rope_scaling"), where),
    )


def hf_family(m: ModelConfig) -> str:
    """The Hugging Face model_type that computes what `m` computes."""
    if m.moe.enabled:
        raise ConversionError("model.moe: mixture-of-experts checkpoints have no Hugging Face "
                              "mapping in mindxh (DeepSeek's own models use MLA attention)")
    if m.qk_norm and m.qkv_bias:
        raise ConversionError("model.qk_norm with model.qkv_bias has no Hugging Face "
                              "architecture (Qwen3 biases o_proj too; Qwen2 has no q/k norm)")
    return "qwen3" if m.qk_norm else "qwen2" if m.qkv_bias else "llama"


def hf_config_from_model(m: ModelConfig, dtype: str, bos_id: int | None, eos_id: int | None,
                         max_positions: int | None = None) -> dict:
    """config.json for `m`: every field the forward pass depends on, written explicitly."""
    family = hf_family(m)
    cfg: dict[str, Any] = {
        "architectures": [FAMILIES[family][0]], "model_type": family,
        "vocab_size": m.vocab_size, "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size, "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads, "num_key_value_heads": m.num_kv_heads,
        "head_dim": m.head_dim, "hidden_act": "silu",
        "max_position_embeddings": max(m.max_seq_len, max_positions or 0),
        "rms_norm_eps": m.norm_eps, "rope_theta": m.rope_theta, "rope_scaling": None,
        "tie_word_embeddings": m.tie_embeddings, "initializer_range": m.init_std,
        "attention_dropout": 0.0, "use_cache": True, "torch_dtype": dtype,
        "bos_token_id": bos_id, "eos_token_id": eos_id,
    }
    if family in ("llama", "qwen3"):
        cfg["attention_bias"] = False
    if family == "llama":
        cfg["mlp_bias"] = False
    else:
        cfg.update(use_sliding_window=False, sliding_window=None, max_window_layers=m.num_layers)
    s = m.rope_scaling
    if s.type == "llama3":
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": s.factor,
                               "low_freq_factor": s.low_freq_factor,
                               "high_freq_factor": s.high_freq_factor,
                               "original_max_position_embeddings":
                                   s.original_max_position_embeddings}
    return cfg


__all__ = ["FAMILIES", "ConversionError", "UnsupportedConfigError", "hf_config_from_model",
           "hf_family", "model_config_from_hf"]
