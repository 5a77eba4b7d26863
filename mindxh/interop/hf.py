"""`mindxh convert`: Hugging Face checkpoints <-> mindxh checkpoint directories.

HF -> mindxh writes a directory that is itself a mindxh checkpoint (model.safetensors with
mindxh names in float32, an empty optimizer.safetensors, state.json at step 0, recipe.yaml)
plus the tokenizer, so `--checkpoint OUT` and `train.init_from=OUT` take it unchanged.
mindxh -> HF writes config.json, generation_config.json, model.safetensors (HF names) and the
tokenizer, for `transformers.AutoModelForCausalLM.from_pretrained`. Every tensor is checked
by name and shape against the config before anything is written; outputs appear atomically.
No torch: bf16 is decoded in numpy (`safetensors_io`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from mindxh.checkpoint import store as ckpt
from mindxh.checkpoint.inference import SavedModel, load_saved
from mindxh.config import (
    OptimConfig,
    Recipe,
    RecipeError,
    TokenizerConfig,
    TrainConfig,
    load_recipe_text,
    recipe_to_yaml,
)
from mindxh.config.errors import InvalidValue
from mindxh.config.schema import ModelConfig
from mindxh.interop import safetensors_io as st
from mindxh.interop.hf_config import (
    ConversionError,
    hf_config_from_model,
    hf_family,
    model_config_from_hf,
)
from mindxh.models.llama import state_dict_adapter as names
from mindxh.tokenizer import Tokenizer
from mindxh.utils.fsio import staging_dir, swap_in

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # preferred first
_BUFFERS = re.compile(r"\.rotary_emb\.inv_freq$")  # a non-weight some old Llama files carry
DEFAULT_MAX_SEQ_LEN = 4096
FINETUNE_LR = 1e-5


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: unreadable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_hf_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of `model.safetensors`, or of the shards an index names, as float32."""
    index = hf_dir / INDEX_FILE
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ConversionError(f"{index}: no 'weight_map' object")
        by_file: dict[str, list[str]] = {}
        for name, fname in weight_map.items():
            if not isinstance(fname, str):
                raise ConversionError(f"{index}: weight_map['{name}'] is {fname!r}, not a file name")
            by_file.setdefault(fname, []).append(name)
        tensors = {}
        for fname, wanted in sorted(by_file.items()):
            if not (hf_dir / fname).is_file():
                raise ConversionError(f"{index} names shard {fname}, which is missing")
            tensors.update(st.read_tensors(hf_dir / fname, wanted))
        return tensors
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return st.read_tensors(single)
    if list(hf_dir.glob("model-*.safetensors")):
        raise ConversionError(f"{hf_dir} has sharded model-*.safetensors but no {INDEX_FILE}")
    if (hf_dir / "pytorch_model.bin").exists() or list(hf_dir.glob("pytorch_model-*.bin")):
        raise ConversionError(f"{hf_dir} holds PyTorch .bin weights; only safetensors are read "
                              "(re-save with save_pretrained(safe_serialization=True))")
    raise ConversionError(f"{hf_dir} has no model.safetensors (nor shards with {INDEX_FILE})")


def _from_hf_tensors(hf: dict[str, np.ndarray], cfg: ModelConfig, where: Path) -> dict:
    """HF-named tensors -> mindxh-named ones, each checked against `cfg`."""
    expected = names.expected_shapes(cfg)
    out = {}
    for hf_name, arr in hf.items():
        if _BUFFERS.search(hf_name):
            continue
        name = names.from_hf_name(hf_name)
        if name == "lm_head.weight" and cfg.tie_embeddings and "model.embed_tokens.weight" in hf:
            if np.array_equal(arr, hf["model.embed_tokens.weight"]):
                continue  # a tied head saved twice
            raise ConversionError(f"{where}: tensor 'lm_head.weight' differs from the embedding "
                                  "but config.json says tie_word_embeddings: true")
        if name not in expected:
            raise ConversionError(f"{where}: unexpected tensor '{hf_name}'; the model that "
                                  "config.json describes has no such weight")
        if arr.shape != expected[name]:
            raise ConversionError(f"{where}: tensor '{hf_name}' has shape {list(arr.shape)}; "
                                  f"config.json implies {list(expected[name])}")
        out[name] = arr
    for name in expected:
        if name not in out:
            raise ConversionError(f"{where}: tensor '{names.to_hf_name(name)}' is missing")
    return out


def _find_tokenizer(hf_dir: Path, given: str | Path | None) -> Path:
    if given is not None:
        return Path(given)
    for fname in TOKENIZER_FILES:
        if (hf_dir / fname).is_file():
            return hf_dir / fname
    raise ConversionError(f"{hf_dir} has no {' or '.join(TOKENIZER_FILES)}; pass --tokenizer FILE")


def load_tokenizer(path: Path):
    """The converted model's tokenizer; a file that is not one is a ConversionError."""
    try:
        return Tokenizer.load(path)
    except ValueError as exc:
        raise ConversionError(f"tokenizer {path}: {exc}") from None


def checked_tensors(loaded: SavedModel) -> dict:
    """The checkpoint's model tensors, each present with the shape its recipe's model needs;
    an unexpected, missing or misshapen tensor is a ConversionError naming it."""
    model, saved = loaded.recipe.model, loaded.checkpoint.model
    expected = names.expected_shapes(model)
    where = loaded.checkpoint_dir / ckpt.MODEL_FILE
    for name in saved:
        if name not in expected:
            raise ConversionError(f"{where}: unexpected tensor '{name}' for this recipe's model")
    for name, shape in expected.items():
        arr = saved.get(name)
        if arr is None or arr.shape != shape:
            found = "missing" if arr is None else f"of shape {list(arr.shape)}"
            raise ConversionError(f"{where}: tensor '{name}' is {found}; the recipe's model needs "
                                  f"{list(shape)}")
    return {name: saved[name] for name in expected}


def fresh_dir(out: Path) -> Path:
    """A hidden sibling to fill before renaming it to `out`, which must be absent or empty."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out} already exists and is not empty; choose another output")
    return staging_dir(out)


def share_files(folder: Path) -> None:
    """Give the written files the umask's permissions (the safetensors writer makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~umask)


def finetune_recipe(name: str, model: ModelConfig, tokenizer: Path, vocab: int) -> Recipe:
    """A recipe for fine-tuning the converted model: its tokenizer, a fine-tuning learning
    rate (the default 3e-3 suits only tiny models trained from scratch)."""
    seq_len = min(TrainConfig().seq_len, model.max_seq_len)
    recipe = Recipe(name=name, output_dir=f"runs/{name}", model=model,
                    tokenizer=TokenizerConfig(path=str(tokenizer), vocab_size=max(vocab, 16)),
                    optim=OptimConfig(lr=FINETUNE_LR), train=TrainConfig(seq_len=seq_len))
    text = recipe_to_yaml(recipe)
    try:
        return load_recipe_text(text, "the converted recipe")  # validated as a user's would be
    except RecipeError as exc:
        raise ConversionError(str(exc)) from None


def hf_to_mindxh(hf_dir: str | Path, out: str | Path, tokenizer: str | Path | None = None,
                 max_seq_len: int = DEFAULT_MAX_SEQ_LEN) -> Path:
    """Convert a Hugging Face model directory into the mindxh checkpoint directory `out`."""
    hf_dir, out = Path(hf_dir), Path(out)
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir} is not a directory")
    hf_cfg = _read_json(hf_dir / "config.json")
    model = model_config_from_hf(hf_cfg, hf_dir / "config.json", max_seq_len)
    try:
        model.check()
    except InvalidValue as exc:
        raise ConversionError(f"{hf_dir / 'config.json'}: model.{exc.key}: {exc.message}") from None
    tok_src = _find_tokenizer(hf_dir, tokenizer)
    tok = load_tokenizer(tok_src)
    if tok.vocab_size > model.vocab_size:
        raise ConversionError(f"tokenizer {tok_src} has {tok.vocab_size} tokens but config.json "
                              f"vocab_size is {model.vocab_size}")
    weights = _from_hf_tensors(read_hf_weights(hf_dir), model, hf_dir)
    tmp = fresh_dir(out)
    tok_dst = out.resolve() / tok_src.name
    shutil.copyfile(tok_src, tmp / tok_src.name)
    if (tok_src.parent / "tokenizer_config.json").is_file():  # special tokens, for both sides
        shutil.copyfile(tok_src.parent / "tokenizer_config.json", tmp / "tokenizer_config.json")
    recipe = finetune_recipe(hf_dir.resolve().name, model, tok_dst, tok.vocab_size)
    ckpt.write_tensors(tmp / ckpt.MODEL_FILE, weights)
    ckpt.write_tensors(tmp / ckpt.OPTIMIZER_FILE, {})
    state = {"data": {"tokenizer_sha256": tok.sha256},
             "converted_from": {"format": "huggingface", "path": str(hf_dir.resolve()),
                                "config": hf_cfg}}
    payload = {"format": ckpt.FORMAT, "step": 0, "state": state}
    (tmp / ckpt.STATE_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (tmp / ckpt.RECIPE_FILE).write_text(recipe_to_yaml(recipe), encoding="utf-8")
    share_files(tmp)
    swap_in(tmp, out)
    log.info("converted %s (%s, %d tensors) -> %s", hf_dir, hf_cfg.get("model_type"),
             len(weights), out)
    return out


def _source_dtype(hf_cfg: dict) -> str:
    dtype = hf_cfg.get("torch_dtype", hf_cfg.get("dtype"))
    return dtype if dtype in st.DTYPE_CODES else "float32"


def mindxh_to_hf(checkpoint: str | Path, out: str | Path, dtype: str = "auto") -> Path:
    """Write a Hugging Face model directory from a mindxh checkpoint or run directory."""
    out = Path(out)
    loaded = load_saved(checkpoint)
    saved, model = loaded.checkpoint, loaded.recipe.model
    hf_family(model)  # what the model is (MoE has no HF mapping), before what its tensors are
    tok, tok_src = loaded.tokenizer, loaded.tokenizer_path
    source = saved.state.get("converted_from", {}).get("config", {})
    if dtype == "auto":
        dtype = _source_dtype(source)
    if dtype not in st.DTYPE_CODES:
        raise ConversionError(f"--dtype {dtype}: expected auto or one of "
                              f"{', '.join(st.DTYPE_CODES)}")
    hf_tensors = {names.to_hf_name(name): arr for name, arr in checked_tensors(loaded).items()}
    bos = source.get("bos_token_id", tok.bos_id if tok.bos_id >= 0 else None)
    eos = source.get("eos_token_id", tok.eos_id if tok.eos_id >= 0 else None)
    hf_cfg = hf_config_from_model(model, dtype, bos, eos, source.get("max_position_embeddings"))
    if "pad_token_id" in source:
        hf_cfg["pad_token_id"] = source["pad_token_id"]
    tmp = fresh_dir(out)
    st.write_tensors(tmp / "model.safetensors", hf_tensors, dtype, {"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n", encoding="utf-8")
    generation = {"bos_token_id": bos, "eos_token_id": eos}
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n",
                                                encoding="utf-8")
    _write_tokenizer(tok, tok_src, tmp)
    swap_in(tmp, out)
    log.info("wrote %s (%s, %s, %d tensors)", out, hf_cfg["model_type"], dtype, len(hf_tensors))
    return out


def _write_tokenizer(tok, src: Path, dst: Path) -> None:
    """Copy the tokenizer file and its tokenizer_config.json, or write one naming the special
    tokens (for SentencePiece: no legacy prefix handling, a dummy prefix only if the model has
    one, so transformers' LlamaTokenizer(Fast) encodes exactly as mindxh does)."""
    target = "tokenizer.json" if src.suffix == ".json" else "tokenizer.model"
    shutil.copyfile(src, dst / target)
    if (src.parent / "tokenizer_config.json").is_file():
        shutil.copyfile(src.parent / "tokenizer_config.json", dst / "tokenizer_config.json")
        return
    piece = lambda i: tok.id_to_piece(i) if i is not None and i >= 0 else None
    config = {"bos_token": piece(tok.bos_id), "eos_token": piece(tok.eos_id),
              "pad_token": piece(tok.pad_id), "unk_token": piece(getattr(tok, "unk_id", -1)),
              "add_bos_token": False, "add_eos_token": False}
    if target == "tokenizer.model":
        prefix = tok.id_to_piece(tok.encode("a")[0]).startswith("\u2581")  # SentencePiece's space
        config.update(tokenizer_class="LlamaTokenizer", legacy=False, add_prefix_space=prefix)
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n",
                                               encoding="utf-8")


__all__ = ["ConversionError", "finetune_recipe", "fresh_dir", "hf_to_mindxh", "load_tokenizer",
           "mindxh_to_hf", "read_hf_weights", "share_files"]
