"""Hugging Face interchange: tiny random transformers models, converted both ways.

Every model here is made by the test (no network): Llama with GQA, Llama 3.1 RoPE scaling with
an untied head, Qwen2 with q/k/v bias, Qwen3 with q/k-norm and a decoupled head_dim. mindxh's
logits must equal transformers' in float32, and HF -> mindxh -> HF must be bitwise exact.
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from mindxh.interop import safetensors_io as st
from mindxh.interop.hf import hf_to_mindxh, mindxh_to_hf
from mindxh.interop.hf_config import ConversionError

VOCAB = 320
_BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
VARIANTS = {
    "llama-gqa": ("LlamaConfig", dict(tie_word_embeddings=True)),
    "llama3-scaled-untied": ("LlamaConfig", dict(
        tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "qwen2-bias": ("Qwen2Config", dict(tie_word_embeddings=True)),
    "qwen3-qknorm-headdim": ("Qwen3Config", dict(head_dim=32, tie_word_embeddings=False)),
}
CORPUS = ["the quick brown fox jumps over the lazy dog", "x = 12 + 30\nanswer: 42",
          "Hugging Face and MindSpore, both ways."] * 20


@pytest.fixture(scope="module")
def ms_pynative():
    import mindspore as ms

    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return ms


def write_tokenizer_json(folder, vocab_size=300):
    """A tiny byte-level BPE tokenizer.json + tokenizer_config.json, trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": {"__type": "AddedToken", "content": "</s>"},
         "pad_token": "<pad>"}))
    return folder / "tokenizer.json"


def make_hf(folder, variant="llama-gqa", dtype=None, max_shard_size=None, **overrides):
    """A random tiny HF model saved to `folder` (weights perturbed so norms and biases matter)."""
    cls_name, extra = VARIANTS[variant]
    cfg = getattr(transformers, cls_name)(**{**_BASE, **extra, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if dtype is not None:
        model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, safe_serialization=True, **kwargs)
    write_tokenizer_json(folder)
    return model.eval()


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


def mindxh_logits(ms, checkpoint, tokens):
    from mindxh.checkpoint.inference import load_for_inference

    model, _, _, _ = load_for_inference(checkpoint)
    return model(ms.Tensor(np.asarray(tokens, np.int32))).asnumpy()


TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 24)).tolist()


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_equal_transformers(variant, tmp_path, ms_pynative):
    hf = make_hf(tmp_path / "hf", variant)
    hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")
    got = mindxh_logits(ms_pynative, tmp_path / "mx", TOKENS)
    np.testing.assert_allclose(got, hf_logits(hf, TOKENS), rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_hf_to_mindxh_to_hf_is_bitwise_exact(variant, tmp_path):
    make_hf(tmp_path / "hf", variant)
    hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")
    mindxh_to_hf(tmp_path / "mx", tmp_path / "back")
    a = st.read_tensors(tmp_path / "hf" / "model.safetensors")
    b = st.read_tensors(tmp_path / "back" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    original = json.loads((tmp_path / "hf" / "config.json").read_text())
    again = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("model_type", "architectures", "head_dim", "rope_scaling", "tie_word_embeddings",
                "num_key_value_heads", "rope_theta", "max_position_embeddings"):
        if key in original:
            assert again[key] == original[key], key
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    first = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    np.testing.assert_array_equal(hf_logits(reloaded, TOKENS), hf_logits(first, TOKENS))


def test_mindxh_trained_model_loads_in_transformers(tmp_path, tiny_tokenizer, ms_pynative):
    """A native mindxh checkpoint (SentencePiece tokenizer, mindxh names) -> transformers."""
    from mindxh.checkpoint import store
    from mindxh.config import Recipe, TokenizerConfig, TrainConfig, recipe_to_yaml
    from mindxh.config.schema import ModelConfig
    from mindxh.models.llama.model import Decoder

    cfg = ModelConfig(vocab_size=None, hidden_size=32, num_heads=4, num_kv_heads=2,
                      intermediate_size=48, num_layers=2, max_seq_len=32, tie_embeddings=False)
    recipe = Recipe(model=cfg, tokenizer=TokenizerConfig(path=str(tiny_tokenizer)),
                    train=TrainConfig(seq_len=32))
    model = Decoder(dataclasses.replace(cfg, vocab_size=512), seed=3)
    tensors = {n: p.asnumpy() for n, p in model.parameters_and_names()}
    step = store.save_checkpoint(tmp_path / "run", 5, tensors, {}, {}, recipe_to_yaml(recipe), 1)
    mindxh_to_hf(tmp_path / "run", tmp_path / "hf")
    from mindxh.tokenizer import Tokenizer

    mine = Tokenizer.load(tiny_tokenizer)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ["Tom has 3 apples.\n<think>3+4=7</think> <answer>7</answer>", "  two  spaces\n"]:
        assert theirs(text, add_special_tokens=False).input_ids == mine.encode(text)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens = [[2, 5, 9, 100, 511, 7]]
    want = mindxh_logits(ms_pynative, step, tokens)
    np.testing.assert_allclose(hf_logits(hf, tokens), want, rtol=0, atol=1e-4)


def test_a_moe_checkpoint_is_refused_as_moe_not_as_unexpected_tensors(tmp_path, tiny_tokenizer,
                                                                      ms_pynative):
    """What the model is decides before its tensors: an MoE checkpoint's router tensors made
    the converters say 'unexpected tensor ... for this recipe's model', as if it were corrupt."""
    from mindxh.checkpoint import store
    from mindxh.config import Recipe, TokenizerConfig, TrainConfig, recipe_to_yaml
    from mindxh.config.schema import ModelConfig, MoEConfig
    from mindxh.interop.mindformers import mindxh_to_mindformers
    from mindxh.models.llama.model import Decoder

    cfg = ModelConfig(vocab_size=None, hidden_size=32, num_heads=4, intermediate_size=48,
                      num_layers=2, max_seq_len=32, moe=MoEConfig(num_experts=2))
    recipe = Recipe(model=cfg, tokenizer=TokenizerConfig(path=str(tiny_tokenizer)),
                    train=TrainConfig(seq_len=32))
    model = Decoder(dataclasses.replace(cfg, vocab_size=512), seed=3)
    tensors = {n: p.asnumpy() for n, p in model.parameters_and_names()}
    store.save_checkpoint(tmp_path / "run", 1, tensors, {}, {}, recipe_to_yaml(recipe), 1)
    with pytest.raises(ConversionError, match="^model.moe: mixture-of-experts .* no Hugging Face"):
        mindxh_to_hf(tmp_path / "run", tmp_path / "hf")
    with pytest.raises(ConversionError, match="^model.moe: .* no mindformers mapping"):
        mindxh_to_mindformers(tmp_path / "run", tmp_path / "mf")
    assert not (tmp_path / "hf").exists() and not (tmp_path / "mf").exists()


def test_sharded_checkpoint_with_index_loads(tmp_path):
    make_hf(tmp_path / "one", "qwen2-bias")
    make_hf(tmp_path / "sharded", "qwen2-bias", max_shard_size="40KB")
    shards = sorted((tmp_path / "sharded").glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    hf_to_mindxh(tmp_path / "one", tmp_path / "a")
    hf_to_mindxh(tmp_path / "sharded", tmp_path / "b")
    a = st.read_tensors(tmp_path / "a" / "model.safetensors")
    b = st.read_tensors(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    shards[0].unlink()
    with pytest.raises(ConversionError, match=shards[0].name):
        hf_to_mindxh(tmp_path / "sharded", tmp_path / "c")


def test_bf16_weights_load_without_torch_and_go_back_as_bf16(tmp_path):
    hf = make_hf(tmp_path / "hf", "llama-gqa", dtype=torch.bfloat16)
    hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")
    mx = st.read_tensors(tmp_path / "mx" / "model.safetensors")
    embed = hf.model.embed_tokens.weight.detach().float().numpy()
    assert mx["embed"].dtype == np.float32 and np.array_equal(mx["embed"], embed)
    mindxh_to_hf(tmp_path / "mx", tmp_path / "back")  # --dtype auto: the source's bf16
    header, _, _ = st.read_header(tmp_path / "back" / "model.safetensors")
    assert {e["dtype"] for e in header.values()} == {"BF16"}
    original = (tmp_path / "hf" / "model.safetensors")
    a, b = st.read_tensors(original), st.read_tensors(tmp_path / "back" / "model.safetensors")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_tied_head_saved_twice_is_accepted(tmp_path):
    make_hf(tmp_path / "hf", "llama-gqa")
    _edit_weights(tmp_path / "hf", lambda t: t.__setitem__("lm_head.weight",
                                                          t["model.embed_tokens.weight"]))
    hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")
    assert "lm_head.weight" not in st.read_tensors(tmp_path / "mx" / "model.safetensors")


def test_bf16_rounding_is_nearest_even():
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, np.inf, np.nan], np.float32)
    want = torch.tensor(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = st.to_bf16_bits(x)
    np.testing.assert_array_equal(got[:-1], want[:-1])
    assert np.isnan((got[-1:].astype(np.uint32) << 16).view(np.float32)[0])  # any NaN payload


def _edit_weights(folder, edit):
    path = folder / "model.safetensors"
    tensors = st.read_tensors(path)
    edit(tensors)
    st.write_tensors(path, tensors, "float32", {"format": "pt"})


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"),
     "'model.layers.1.mlp.up_proj.weight' is missing"),
    (lambda t: t.__setitem__("model.layers.0.mlp.extra.weight", np.zeros(3, np.float32)),
     "unexpected tensor 'model.layers.0.mlp.extra.weight'"),
    (lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.weight",
                             np.zeros((8, 64), np.float32)),
     "'model.layers.0.self_attn.k_proj.weight' has shape [8, 64]"),
    (lambda t: t.__setitem__("lm_head.weight", np.zeros((VOCAB, 64), np.float32)),
     "'lm_head.weight' differs from the embedding"),
])
def test_bad_tensors_are_named(edit, needle, tmp_path):
    make_hf(tmp_path / "hf", "llama-gqa")
    _edit_weights(tmp_path / "hf", edit)
    with pytest.raises(ConversionError) as info:
        hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")
    assert needle in str(info.value)
    assert not (tmp_path / "mx").exists()


@pytest.mark.parametrize("key, value, named", [
    ("hidden_act", "gelu", "'hidden_act'"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 2.0}, "'rope_scaling.rope_type'"),
    ("use_sliding_window", True, "'use_sliding_window'"),
    ("model_type", "mistral", "'model_type'"),
    ("attention_bias", True, "'attention_bias'"),
    ("mlp_bias", True, "'mlp_bias'"),
    ("quantization_config", {"quant_method": "gptq"}, "'quantization_config'"),
    # malformed values: errors naming the field, not tracebacks
    ("rope_theta", "abc", "'rope_theta' is 'abc', not a number"),
    ("rms_norm_eps", None, "'rms_norm_eps' is None, not a number"),
    ("max_position_embeddings", None, "'max_position_embeddings' is None"),
    ("head_dim", 4.5, "'head_dim' is 4.5, not an integer"),
])
def test_unsupported_config_fields_are_named(key, value, named, tmp_path):
    variant = "qwen2-bias" if key == "use_sliding_window" else "llama-gqa"
    make_hf(tmp_path / "hf", variant)
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(ConversionError, match=named.replace(".", r"\.")):
        hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")


def test_json_files_of_the_wrong_shape_are_named(tmp_path):
    make_hf(tmp_path / "hf", "llama-gqa")
    (tmp_path / "hf" / "config.json").write_text("[1, 2]")
    with pytest.raises(ConversionError, match="config.json: expected a JSON object, got list"):
        hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")


def test_cli_errors_are_one_line(tmp_path):
    make_hf(tmp_path / "hf", "llama-gqa")
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "hidden_act": "relu"}))
    res = run_cli("convert", "hf-to-mindxh", str(tmp_path / "hf"), str(tmp_path / "mx"))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "hidden_act" in res.stderr
    assert "Traceback" not in res.stderr


def test_converted_checkpoint_is_a_recipe_and_init_from_source(tmp_path, ms_pynative):
    """OUT/recipe.yaml loads; train.init_from=OUT fills a model built from that recipe."""
    from mindxh.config import load_recipe
    from mindxh.models.llama.model import build_model
    from mindxh.models.llama.state_dict_adapter import expected_shapes
    from mindxh.tokenizer import Tokenizer
    from mindxh.train import warmstart

    make_hf(tmp_path / "hf", "qwen3-qknorm-headdim")
    hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")
    recipe = load_recipe(tmp_path / "mx" / "recipe.yaml", [f"train.init_from={tmp_path / 'mx'}"])
    assert recipe.model.head_dim == 32 and recipe.model.qk_norm and not recipe.model.qkv_bias
    tok = Tokenizer.load(recipe.tokenizer.path)
    model = build_model(recipe.model, recipe.seed)
    params = list(model.parameters_and_names())
    assert {n: tuple(p.shape) for n, p in params} == expected_shapes(recipe.model)
    warmstart.load_weights(recipe.train.init_from, params, tok.sha256)


def test_tokenizer_json_round_trip(tmp_path):
    from mindxh.tokenizer import Tokenizer
    from mindxh.tokenizer.hf_json import JsonTokenizer

    path = write_tokenizer_json(tmp_path)
    tok = Tokenizer.load(path)  # the recipe's tokenizer.path may name a tokenizer.json
    assert isinstance(tok, JsonTokenizer) and tok.path == str(path)
    for text in ["the quick brown fox", "x = 12 + 30\nanswer: 42", "ünïcödé 字 \t tabs  "]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("the fox", bos=True, eos=True)
    assert ids[0] == tok.bos_id == tok.piece_to_id("<s>")
    assert ids[-1] == tok.eos_id == tok.piece_to_id("</s>")
    assert tok.pad_id == tok.piece_to_id("<pad>") and tok.decode(ids) == "the fox"
    assert tok.piece_to_id("</answer>") == -1 and tok.answer_end_id is None
    assert tok.id_to_piece(tok.bos_id) == "<s>" and tok.vocab_size == len(tok) == 300
    assert len(tok.sha256) == 64


def test_sentencepiece_tokenizer_model_is_taken(tmp_path, tiny_tokenizer, ms_pynative):
    make_hf(tmp_path / "hf", "llama-gqa", vocab_size=512)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).unlink()
    shutil.copy(tiny_tokenizer, tmp_path / "hf" / "tokenizer.model")
    hf_to_mindxh(tmp_path / "hf", tmp_path / "mx")
    from mindxh.checkpoint.inference import load_for_inference

    _, tok, recipe, _ = load_for_inference(tmp_path / "mx")
    assert recipe.tokenizer.path.endswith("tokenizer.model") and tok.vocab_size == 512
