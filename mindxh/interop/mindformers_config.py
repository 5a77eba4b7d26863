"""A mindformers model YAML (`model: model_config:` of its legacy `LlamaConfig`) <-> `ModelConfig`.

Strict like `hf_config`: each model_config key is mapped, known not to change the float32
forward pass (dtypes, parallelism, generation and kernel switches), or refused by name, since
an unknown key might change the math. Key meanings and defaults follow mindformers 1.9's
`mindformers/models/llama/llama_config.py` and `llama_layer.LlamaFeedForward`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mindxh.config.schema import ModelConfig, RopeScalingConfig
from mindxh.interop.hf_config import (
    LLAMA3_KEYS,
    ConversionError,
    UnsupportedConfigError,
    llama3_scaling,
)

CONFIG_TYPE, ARCH_TYPE = "LlamaConfig", "LlamaForCausalLM"
# LlamaConfig's own defaults for the keys that shape the model
DEFAULTS: dict[str, Any] = {"n_kv_heads": None, "intermediate_size": None, "multiple_of": 256,
                            "ffn_dim_multiplier": None, "rms_norm_eps": 1e-5, "theta": 10000.0,
                            "seq_length": 2048, "max_position_embedding": None,
                            "tie_word_embeddings": False, "qkv_has_bias": False,
                            "init_method_std": 0.01, "extend_method": "None"}
_MAPPED = {"type", "vocab_size", "hidden_size", "num_layers", "num_heads", "scaling_factor",
           "attn_proj_has_bias", "qkv_concat", "moe_config", "quant_config",
           "parallel_decoding_params", *DEFAULTS}
# dtypes (a float32 conversion computes in float32), kernels, parallelism, generation, ids
_IGNORED = {"batch_size", "bos_token_id", "eos_token_id", "pad_token_id", "ignore_token_id",
            "compute_dtype", "layernorm_compute_type", "softmax_compute_type", "rotary_dtype",
            "param_init_type", "residual_dtype", "embedding_init_type", "parallel_config",
            "use_past", "is_dynamic", "use_rope_slice", "use_flash_attention",
            "use_ring_attention", "use_attn_mask_compression", "use_eod_attn_mask_compression",
            "parallel_optimizer", "fine_grain_interleave", "pp_interleave_num", "offset",
            "checkpoint_name_or_path", "repetition_penalty", "max_decode_length", "block_size",
            "num_blocks", "top_k", "top_p", "do_sample", "llm_backend", "fused_rms_norm",
            "input_sliced_sig", "rmsnorm_compute_2d", "chunk_prefill", "use_fused_swiglu",
            "calculate_per_token_loss", "pipeline_stage", "return_hidden_states",
            "use_3d_tensor_parallel", "tp_x", "tp_y", "tp_z", "auto_register", "seq_split_num"}


def _refuse(where: str, key: str, value: Any, why: str) -> UnsupportedConfigError:
    return UnsupportedConfigError(f"{where}: model_config.{key} = {value!r} is not supported: "
                                  f"{why}")


def read_yaml(path: str | Path) -> dict:
    """The whole mindformers YAML (a run config, or just its `model:` section)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path} is missing") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConversionError(f"{path}: unreadable YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a mapping at the top")
    return data


def model_section(data: dict, where: str) -> dict:
    """`model.model_config`, after checking `model.arch.type`."""
    model = data.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("model_config"), dict):
        raise ConversionError(f"{where}: no 'model: model_config:' mapping (a mindformers "
                              "run YAML such as configs/llama2/pretrain_llama2_7b.yaml)")
    arch = (model.get("arch") or {}).get("type", ARCH_TYPE)
    if arch != ARCH_TYPE:
        raise UnsupportedConfigError(f"{where}: model.arch.type = {arch!r} is not supported: "
                                     f"only mindformers' legacy {ARCH_TYPE} is")
    return model["model_config"]


def ffn_hidden_size(hidden: int, intermediate_size: int | None, multiple_of: int = 256,
                    ffn_dim_multiplier: float | None = None) -> int:
    """LlamaFeedForward's width: intermediate_size, else Meta's 8/3 * hidden rounded up."""
    if intermediate_size is not None:
        return int(intermediate_size)
    width = 4 * hidden
    if ffn_dim_multiplier is not None:
        width = int((ffn_dim_multiplier + 0.01) * width)
    width = int(2 * width / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


def _rope_scaling(mc: dict, where: str) -> RopeScalingConfig:
    method = mc.get("extend_method", "None")
    if method in (None, "None"):
        return RopeScalingConfig()
    if method != "LLAMA3":
        raise _refuse(where, "extend_method", method, "mindxh implements only LLAMA3 (Llama 3.1) "
                      "scaling; PI, NTK, YARN, DYNAMIC_NTK and linear are not")
    raw = mc.get("scaling_factor")
    if not isinstance(raw, dict) or set(raw) != set(LLAMA3_KEYS):
        raise _refuse(where, "scaling_factor", raw,
                      f"LLAMA3 needs exactly {', '.join(LLAMA3_KEYS)}")
    return llama3_scaling(raw)


def _check_fields(mc: dict, where: str) -> None:
    for key in mc:
        if key not in _MAPPED and key not in _IGNORED:
            raise UnsupportedConfigError(f"{where}: model_config.{key} is not supported by "
                                         "mindxh convert (it may change the model's math)")
    if mc.get("type", CONFIG_TYPE) != CONFIG_TYPE:
        raise _refuse(where, "type", mc["type"], f"only {CONFIG_TYPE} (legacy Llama) is")
    if mc.get("attn_proj_has_bias", False):
        raise _refuse(where, "attn_proj_has_bias", True, "mindxh's attention output has no bias")
    for key in ("quant_config", "parallel_decoding_params"):
        if mc.get(key) is not None:
            raise _refuse(where, key, mc[key], "only plain dense weights are converted")
    moe = mc.get("moe_config") or {}
    if isinstance(moe, dict) and int(moe.get("expert_num", 1) or 1) > 1:
        raise _refuse(where, "moe_config.expert_num", moe["expert_num"], "the MLP is dense")


def model_config_from_mindformers(mc: dict, where: str | Path = "model_config",
                                  max_seq_len: int | None = None) -> ModelConfig:
    """The ModelConfig computing what mindformers' LlamaForCausalLM(mc) computes; `max_seq_len`
    caps the RoPE/mask tables (mindformers' own length is max(seq_length, max_position))."""
    where = str(where)
    _check_fields(mc, where)
    get = lambda key: mc[key] if mc.get(key) is not None else DEFAULTS[key]
    for key in ("vocab_size", "hidden_size", "num_layers", "num_heads"):
        if not isinstance(mc.get(key), int):
            raise UnsupportedConfigError(f"{where}: model_config.{key} is missing or not an "
                                         "integer")
    kv = mc.get("n_kv_heads")
    if kv is not None and (isinstance(kv, bool) or not isinstance(kv, int)):
        raise UnsupportedConfigError(f"{where}: model_config.n_kv_heads is {kv!r}, not an integer")
    hidden, heads = mc["hidden_size"], mc["num_heads"]
    if hidden % heads:
        raise _refuse(where, "num_heads", heads, f"it must divide hidden_size={hidden}")
    positions = max(int(get("seq_length")), int(mc.get("max_position_embedding") or 0))
    return ModelConfig(
        vocab_size=mc["vocab_size"], hidden_size=hidden, num_layers=mc["num_layers"],
        num_heads=heads, num_kv_heads=mc.get("n_kv_heads") or heads,
        intermediate_size=ffn_hidden_size(hidden, mc.get("intermediate_size"),
                                          int(get("multiple_of")), mc.get("ffn_dim_multiplier")),
        max_seq_len=min(positions, max_seq_len) if max_seq_len else positions,
        rope_theta=float(get("theta")), norm_eps=float(get("rms_norm_eps")),
        tie_embeddings=bool(get("tie_word_embeddings")), qkv_bias=bool(get("qkv_has_bias")),
        init_std=float(get("init_method_std")),
        rope_scaling=_rope_scaling(mc, where))


def check_convertible(m: ModelConfig) -> None:
    """Refuse a model mindformers' Llama cannot compute, before its tensors are read."""
    if m.moe.enabled:
        raise ConversionError("model.moe: mindxh's mixture-of-experts layers have no mindformers mapping")
    if m.qk_norm:
        raise ConversionError("model.qk_norm: mindformers' LlamaForCausalLM has no q/k norm")
    if m.hidden_size != m.num_heads * m.head_dim:
        raise ConversionError(f"model.head_dim={m.head_dim}: mindformers' Llama needs "
                              f"hidden_size / num_heads = {m.hidden_size // m.num_heads}")


def mindformers_config_from_model(m: ModelConfig, qkv_concat: bool = False, dtype: str = "float32",
                                  token_ids: dict[str, int] | None = None) -> dict:
    """`model_config` for `m`: shape keys explicit, plus settings that run on CPU too
    (no flash attention or fused RMSNorm; on Ascend switch them back on for speed)."""
    check_convertible(m)
    cfg: dict[str, Any] = {
        "type": CONFIG_TYPE, "seq_length": m.max_seq_len, "vocab_size": m.vocab_size,
        "hidden_size": m.hidden_size, "num_layers": m.num_layers, "num_heads": m.num_heads,
        "n_kv_heads": m.num_kv_heads, "intermediate_size": m.intermediate_size,
        "rms_norm_eps": m.norm_eps, "theta": m.rope_theta, "init_method_std": m.init_std,
        "tie_word_embeddings": m.tie_embeddings, "qkv_has_bias": m.qkv_bias,
        "qkv_concat": qkv_concat, "extend_method": "None", "scaling_factor": 1.0,
        "compute_dtype": dtype, "param_init_type": dtype, "layernorm_compute_type": "float32",
        "softmax_compute_type": "float32", "rotary_dtype": "float32",
        "use_flash_attention": False, "fused_rms_norm": False, "use_rope_slice": True,
    }
    s = m.rope_scaling
    if s.type == "llama3":
        cfg["extend_method"] = "LLAMA3"
        cfg["scaling_factor"] = {"factor": s.factor, "low_freq_factor": s.low_freq_factor,
                                 "high_freq_factor": s.high_freq_factor,
                                 "original_max_position_embeddings":
                                     s.original_max_position_embeddings}
        # mindformers refuses original >= max_position_embedding; only the table size changes
        cfg["max_position_embedding"] = max(m.max_seq_len, int(
            s.original_max_position_embeddings * s.factor))
    cfg.update({k: v for k, v in (token_ids or {}).items() if v is not None and v >= 0})
    return cfg


def mindformers_yaml(model_config: dict, tokenizer: Path | None) -> str:
    """A mindformers YAML holding the model (and tokenizer) sections, to merge into a run
    config (set its `load_checkpoint` to the converted file)."""
    doc: dict[str, Any] = {"model": {"model_config": model_config, "arch": {"type": ARCH_TYPE}}}
    if tokenizer is not None:
        spm = tokenizer.suffix != ".json"
        key = "vocab_file" if spm else "tokenizer_file"
        doc["processor"] = {"return_tensors": "ms", "type": "LlamaProcessor", "tokenizer": {
            "type": "LlamaTokenizer" if spm else "LlamaTokenizerFast", key: str(tokenizer)}}
    return yaml.safe_dump(doc, sort_keys=False)


def tokenizer_from_yaml(data: dict, base: Path) -> Path | None:
    """The tokenizer file the YAML's `processor.tokenizer` names, when it exists (a relative
    path as mindformers reads it, from the working directory, else from the YAML's folder)."""
    tok = (data.get("processor") or {}).get("tokenizer") or {}
    for key in ("vocab_file", "tokenizer_file"):
        if isinstance(tok.get(key), str):
            path = Path(tok[key]).expanduser()
            for candidate in (path, base / path):
                if candidate.is_file():
                    return candidate
    return None


__all__ = ["ffn_hidden_size", "mindformers_config_from_model", "mindformers_yaml",
           "model_config_from_mindformers", "model_section", "read_yaml", "tokenizer_from_yaml"]
