"""mindformers' legacy Llama checkpoints (`.ckpt` or `.safetensors`) <-> mindxh checkpoint dirs.

Checked against mindformers 1.9.0 (`LlamaForCausalLM.parameters_and_names()` and its forward):
names are `model.tok_embeddings.embedding_weight`, `model.layers.N.attention.{wq,wk,wv,wo}`,
`...feed_forward.{w1 (gate), w3 (up), w2 (down)}`, `attention_norm`, `ffn_norm`,
`model.norm_out.weight`, `lm_head.weight` (absent when tied). Weights are [out, in] and RoPE
rotates halves as in Hugging Face (`use_rope_slice` only picks the kernel), so q/k rows need no
permutation. With `qkv_concat: true` (which also fuses the MLP) two fused tensors replace five:
`attention.w_qkv` (weight and bias) is grouped by kv head, each group [its n_rep q heads, k, v];
`feed_forward.w_gate_hidden` interleaves rows gate_0, up_0, gate_1, up_1, ... Only reading and
writing `.ckpt` needs MindSpore; mindformers itself is needed only to check the result.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np

from mindxh.checkpoint import store as ckpt
from mindxh.checkpoint.inference import load_saved
from mindxh.config import recipe_to_yaml
from mindxh.config.errors import InvalidValue
from mindxh.config.schema import ModelConfig
from mindxh.interop import mindformers_config as mfc
from mindxh.interop import safetensors_io as st
from mindxh.interop.hf import (
    checked_tensors,
    finetune_recipe,
    fresh_dir,
    load_tokenizer,
    share_files,
)
from mindxh.interop.hf_config import ConversionError
from mindxh.models.llama import state_dict_adapter as names
from mindxh.utils.fsio import swap_in

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16")
FORMATS = {"ckpt": "model.ckpt", "safetensors": "model.safetensors"}
YAML_FILE = "model.yaml"
_LAYER = {  # mindxh suffix -> mindformers suffix, under layers.{i}. / model.layers.{i}.
    "attn_norm.weight": "attention_norm.weight", "mlp_norm.weight": "ffn_norm.weight",
    "attn.wq.weight": "attention.wq.weight", "attn.wk.weight": "attention.wk.weight",
    "attn.wv.weight": "attention.wv.weight", "attn.wo.weight": "attention.wo.weight",
    "attn.wq.bias": "attention.wq.bias", "attn.wk.bias": "attention.wk.bias",
    "attn.wv.bias": "attention.wv.bias", "mlp.gate.weight": "feed_forward.w1.weight",
    "mlp.up.weight": "feed_forward.w3.weight", "mlp.down.weight": "feed_forward.w2.weight",
}
_GLOBAL = {"embed": "model.tok_embeddings.embedding_weight", "norm.weight": "model.norm_out.weight",
           "lm_head.weight": "lm_head.weight"}
_MX_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_MF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_FUSED = re.compile(r"^(model\.layers\.\d+\.)"
                    r"(attention\.w_qkv|feed_forward\.w_gate_hidden)\.(\w+)$")


def to_mf_name(name: str) -> str | None:
    """The mindformers name of a mindxh tensor (unfused layout), or None."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _MX_LAYER.match(name)
    return f"model.layers.{m[1]}.{_LAYER[m[2]]}" if m and m[2] in _LAYER else None


def from_mf_name(name: str) -> str | None:
    """The mindxh name of a mindformers tensor (unfused layout), or None."""
    inverse = {v: k for k, v in _LAYER.items()}
    m = _MF_LAYER.match(name)
    if m:
        return f"layers.{m[1]}.{inverse[m[2]]}" if m[2] in inverse else None
    return {v: k for k, v in _GLOBAL.items()}.get(name)


def fuse_qkv(q: np.ndarray, k: np.ndarray, v: np.ndarray, num_kv_heads: int) -> np.ndarray:
    """[q; k; v] rows (or biases) -> w_qkv: per kv head, its q heads then its k and v head."""
    rest = q.shape[1:]
    parts = [x.reshape(num_kv_heads, x.shape[0] // num_kv_heads, -1) for x in (q, k, v)]
    return np.concatenate(parts, axis=1).reshape(-1, *rest)


def split_qkv(w: np.ndarray, num_heads: int, num_kv_heads: int, head_dim: int):
    """w_qkv -> (q, k, v), the inverse of `fuse_qkv`."""
    rest, n_q = w.shape[1:], num_heads // num_kv_heads * head_dim
    grouped = w.reshape(num_kv_heads, n_q + 2 * head_dim, -1)
    q, k, v = (grouped[:, a:b] for a, b in ((0, n_q), (n_q, n_q + head_dim),
                                           (n_q + head_dim, n_q + 2 * head_dim)))
    return tuple(np.ascontiguousarray(x).reshape(-1, *rest) for x in (q, k, v))


def fuse_gate_up(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """w1, w3 [f, h] -> w_gate_hidden [2f, h], rows interleaved gate_0, up_0, gate_1, ..."""
    return np.stack([gate, up], axis=1).reshape(-1, *gate.shape[1:])


def split_gate_up(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w_gate_hidden -> (w1, w3), the inverse of `fuse_gate_up`."""
    pairs = w.reshape(w.shape[0] // 2, 2, *w.shape[1:])
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def _is_model_tensor(name: str) -> bool:
    """Model weights; optimizer moments (adam_m.model...), steps and loss scales are not."""
    return name.startswith(("model.", "lm_head."))


def read_mindformers_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The model tensors of a mindformers `.ckpt` or `.safetensors` file, floats as float32."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} is not a file (expected a mindformers .ckpt or "
                              ".safetensors)")
    if path.suffix == ".safetensors":
        header, _, _ = st.read_header(path)
        return st.read_tensors(path, [n for n in header if _is_model_tensor(n)])
    if path.suffix != ".ckpt":
        raise ConversionError(f"{path}: expected a .ckpt or .safetensors file")
    import mindspore as ms

    try:
        params = ms.load_checkpoint(str(path), choice_func=_is_model_tensor)
    except (ValueError, RuntimeError, TypeError) as exc:
        if "empty after filter" in str(exc) and path.stat().st_size > 0:  # none named model.*
            try:
                names = list(ms.load_checkpoint(str(path)))[:4]
            except (ValueError, RuntimeError, TypeError):
                names = []
            raise ConversionError(f"{path}: no tensor is named model.* or lm_head.* as mindformers' "
                                  f"LlamaForCausalLM names them (found e.g. {names}); strip the "
                                  "prefix (network., backbone.) the training wrapper added") from None
        raise ConversionError(f"{path}: unreadable MindSpore checkpoint: {exc}") from None
    out = {}
    for name, param in params.items():
        wide = param.astype(ms.float32) if param.dtype in (ms.float16, ms.bfloat16) else param
        out[name] = wide.asnumpy()
    return out


def mindformers_to_mindxh_tensors(mf: dict[str, np.ndarray], cfg: ModelConfig,
                                  where: str | Path) -> dict[str, np.ndarray]:
    """mindformers-named tensors (fused or not) -> mindxh-named ones, checked against `cfg`."""
    unfused: dict[str, np.ndarray] = {}
    for name, arr in mf.items():
        m = _FUSED.match(name)
        if m is None:
            unfused[name] = arr
        elif m[2] == "attention.w_qkv":
            if arr.shape[0] != (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim:
                raise ConversionError(f"{where}: tensor '{name}' has shape {list(arr.shape)}; "
                                      "the config implies another q/k/v width")
            for part, x in zip("qkv", split_qkv(arr, cfg.num_heads, cfg.num_kv_heads,
                                                cfg.head_dim)):
                unfused[f"{m[1]}attention.w{part}.{m[3]}"] = x
        else:
            gate, up = split_gate_up(arr)
            unfused[f"{m[1]}feed_forward.w1.{m[3]}"] = gate
            unfused[f"{m[1]}feed_forward.w3.{m[3]}"] = up
    expected = names.expected_shapes(cfg)
    out = {}
    for mf_name, arr in unfused.items():
        name = from_mf_name(mf_name)
        if name == "lm_head.weight" and cfg.tie_embeddings and _GLOBAL["embed"] in unfused:
            if np.array_equal(arr, unfused[_GLOBAL["embed"]]):
                continue  # a tied head saved twice
            raise ConversionError(f"{where}: tensor 'lm_head.weight' differs from the embedding "
                                  "but the config says tie_word_embeddings: true")
        if name not in expected:
            hint = " (Hugging Face names: use hf-to-mindxh)" if ".self_attn." in mf_name else ""
            raise ConversionError(f"{where}: unexpected tensor '{mf_name}'; the model the YAML "
                                  f"describes has no such weight{hint}")
        if arr.shape != expected[name]:
            raise ConversionError(f"{where}: tensor '{mf_name}' has shape {list(arr.shape)}; "
                                  f"the YAML implies {list(expected[name])}")
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    for name in expected:
        if name not in out:
            raise ConversionError(f"{where}: tensor '{to_mf_name(name)}' is missing")
    return out


def mindxh_to_mindformers_tensors(mx: dict[str, np.ndarray], cfg: ModelConfig,
                                  qkv_concat: bool = False) -> dict[str, np.ndarray]:
    """mindxh-named tensors -> mindformers-named ones, fused when `qkv_concat`."""
    out = {to_mf_name(name): arr for name, arr in mx.items()}
    if not qkv_concat:
        return out
    for i in range(cfg.num_layers):
        pre = f"model.layers.{i}."
        for kind in ("weight", "bias"):
            if f"{pre}attention.wq.{kind}" in out:
                q, k, v = (out.pop(f"{pre}attention.w{p}.{kind}") for p in "qkv")
                out[f"{pre}attention.w_qkv.{kind}"] = fuse_qkv(q, k, v, cfg.num_kv_heads)
        gate, up = out.pop(f"{pre}feed_forward.w1.weight"), out.pop(f"{pre}feed_forward.w3.weight")
        out[f"{pre}feed_forward.w_gate_hidden.weight"] = fuse_gate_up(gate, up)
    return out


def write_mindformers_weights(path: Path, tensors: dict[str, np.ndarray], dtype: str) -> None:
    """`.ckpt` through MindSpore (as mindformers saves), or `.safetensors` in numpy."""
    if path.suffix == ".safetensors":
        st.write_tensors(path, tensors, dtype, {"format": "ms"})
        return
    import mindspore as ms

    ms_dtype = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}[dtype]
    ms.save_checkpoint([{"name": n, "data": ms.Tensor(np.asarray(a, np.float32), ms_dtype)}
                        for n, a in tensors.items()], str(path))


def _write_mindxh(tmp: Path, weights: dict, recipe, tok, source: dict) -> None:
    ckpt.write_tensors(tmp / ckpt.MODEL_FILE, weights)
    ckpt.write_tensors(tmp / ckpt.OPTIMIZER_FILE, {})
    state = {"data": {"tokenizer_sha256": tok.sha256}, "converted_from": source}
    payload = {"format": ckpt.FORMAT, "step": 0, "state": state}
    (tmp / ckpt.STATE_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n",
                                       encoding="utf-8")
    (tmp / ckpt.RECIPE_FILE).write_text(recipe_to_yaml(recipe), encoding="utf-8")
    share_files(tmp)


def _from_yaml(config: Path, tokenizer: str | Path | None, max_seq_len: int | None):
    """(model_config block, ModelConfig, tokenizer path, tokenizer) for a mindformers YAML."""
    data = mfc.read_yaml(config)
    mc = mfc.model_section(data, str(config))
    model = mfc.model_config_from_mindformers(mc, config, max_seq_len)
    try:
        model.check()
    except InvalidValue as exc:
        raise ConversionError(f"{config}: model.{exc.key}: {exc.message}") from None
    tok_src = Path(tokenizer) if tokenizer else mfc.tokenizer_from_yaml(data, config.parent)
    if tok_src is None:
        raise ConversionError(f"{config}: processor.tokenizer names no existing vocab_file; "
                              "pass --tokenizer FILE (a SentencePiece .model or tokenizer.json)")
    tok = load_tokenizer(tok_src)
    if tok.vocab_size > model.vocab_size:
        raise ConversionError(f"tokenizer {tok_src} has {tok.vocab_size} tokens but the YAML's "
                              f"vocab_size is {model.vocab_size}")
    return mc, model, tok_src, tok


def mindformers_recipe(config: str | Path, tokenizer: str | Path | None = None,
                       max_seq_len: int | None = 4096) -> str:
    """The mindxh recipe (YAML text) for the model a mindformers YAML describes."""
    config = Path(config)
    _, model, tok_src, tok = _from_yaml(config, tokenizer, max_seq_len)
    return recipe_to_yaml(finetune_recipe(config.stem, model, tok_src.resolve(), tok.vocab_size))


def _copy_tokenizer(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst / src.name)
    if (src.parent / "tokenizer_config.json").is_file():  # special tokens of a tokenizer.json
        shutil.copyfile(src.parent / "tokenizer_config.json", dst / "tokenizer_config.json")


def mindformers_to_mindxh(checkpoint: str | Path, config: str | Path, out: str | Path,
                          tokenizer: str | Path | None = None,
                          max_seq_len: int | None = 4096) -> Path:
    """Convert a mindformers Llama checkpoint and its YAML into the mindxh checkpoint dir `out`."""
    checkpoint, config, out = Path(checkpoint), Path(config), Path(out)
    mc, model, tok_src, tok = _from_yaml(config, tokenizer, max_seq_len)
    weights = mindformers_to_mindxh_tensors(read_mindformers_weights(checkpoint), model, checkpoint)
    tmp = fresh_dir(out)
    _copy_tokenizer(tok_src, tmp)
    recipe = finetune_recipe(checkpoint.stem, model, out.resolve() / tok_src.name, tok.vocab_size)
    source = {"format": "mindformers", "path": str(checkpoint.resolve()), "config": mc}
    _write_mindxh(tmp, weights, recipe, tok, source)
    swap_in(tmp, out)
    log.info("converted %s (%d tensors) -> %s", checkpoint, len(weights), out)
    return out


def _saved_model(checkpoint: str | Path):
    """(checkpoint dir, Checkpoint, ModelConfig, tokenizer path, tokenizer), tensors checked."""
    loaded = load_saved(checkpoint)
    mfc.check_convertible(loaded.recipe.model)  # what the model is, before what its tensors are
    checked_tensors(loaded)
    return (loaded.checkpoint_dir, loaded.checkpoint, loaded.recipe.model, loaded.tokenizer_path,
            loaded.tokenizer)


def mindxh_to_mindformers(checkpoint: str | Path, out: str | Path, qkv_concat: bool | None = None,
                          dtype: str = "auto", fmt: str = "ckpt") -> Path:
    """Write OUT/model.ckpt (or .safetensors), OUT/model.yaml and the tokenizer for mindformers.

    `qkv_concat` and `dtype` default to the original's for a model converted from mindformers,
    else unfused and float32."""
    out = Path(out)
    if fmt not in FORMATS:
        raise ConversionError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    checkpoint_dir, saved, model, tok_src, tok = _saved_model(checkpoint)
    source = saved.state.get("converted_from", {})
    source = source.get("config", {}) if source.get("format") == "mindformers" else {}
    if qkv_concat is None:
        qkv_concat = bool(source.get("qkv_concat", False))
    if dtype == "auto":
        dtype = source.get("param_init_type", "float32")
        dtype = dtype if dtype in DTYPES else "float32"
    if dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype}: expected auto or one of {', '.join(DTYPES)}")
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    ids.update({k: source[k] for k in ids if isinstance(source.get(k), int)})
    mc = mfc.mindformers_config_from_model(model, qkv_concat, dtype, ids)
    for key in ("seq_length", "max_position_embedding"):  # capped by --max-seq-len on the way
        if isinstance(source.get(key), int) and source[key] >= model.max_seq_len:  # in: restore
            mc[key] = source[key]
    tensors = mindxh_to_mindformers_tensors(saved.model, model, qkv_concat)
    tmp = fresh_dir(out)
    write_mindformers_weights(tmp / FORMATS[fmt], tensors, dtype)
    _copy_tokenizer(tok_src, tmp)
    text = mfc.mindformers_yaml(mc, out.resolve() / tok_src.name)
    (tmp / YAML_FILE).write_text(text, encoding="utf-8")
    share_files(tmp)
    swap_in(tmp, out)
    log.info("wrote %s (%s, %s, %d tensors, qkv_concat=%s) from %s", out, fmt, dtype,
             len(tensors), qkv_concat, checkpoint_dir)
    return out


__all__ = ["from_mf_name", "fuse_gate_up", "fuse_qkv", "mindformers_recipe",
           "mindformers_to_mindxh", "mindformers_to_mindxh_tensors", "mindxh_to_mindformers",
           "mindxh_to_mindformers_tensors", "read_mindformers_weights", "split_gate_up",
           "split_qkv", "to_mf_name", "write_mindformers_weights"]
