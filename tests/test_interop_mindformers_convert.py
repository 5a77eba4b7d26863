"""mindformers interchange without mindformers: names, fused layouts, YAML, files, CLI.

The names and layouts asserted here are the ones mindformers 1.9.0's LlamaForCausalLM was seen
to use; tests/test_interop_mindformers.py checks them against the real model (in .venv-mf).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml
from conftest import run_cli

from mindxh.config.schema import ModelConfig, RopeScalingConfig
from mindxh.interop import mindformers as mf
from mindxh.interop import mindformers_config as mfc
from mindxh.interop.hf_config import ConversionError, UnsupportedConfigError
from mindxh.models.llama import state_dict_adapter as names

CFG = ModelConfig(vocab_size=320, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  intermediate_size=48, max_seq_len=32, tie_embeddings=False, qkv_bias=True)
# parameters_and_names() of mindformers' LlamaForCausalLM, layer 0, as printed by mindformers 1.9
MF_LAYER0 = ["ffn_norm.weight", "attention_norm.weight", "attention.wq.weight",
             "attention.wk.weight", "attention.wv.weight", "attention.wo.weight",
             "feed_forward.w1.weight", "feed_forward.w2.weight", "feed_forward.w3.weight"]
MF_LAYER0_FUSED = ["ffn_norm.weight", "attention_norm.weight", "attention.w_qkv.weight",
                   "attention.wo.weight", "feed_forward.w_gate_hidden.weight",
                   "feed_forward.w2.weight"]


def random_tensors(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(size=s).astype(np.float32) for n, s in names.expected_shapes(cfg).items()}


def test_names_are_mindformers_own():
    plain = dataclasses.replace(CFG, qkv_bias=False)
    got = {mf.to_mf_name(n) for n in names.expected_shapes(plain)}
    want = {"model.tok_embeddings.embedding_weight", "model.norm_out.weight", "lm_head.weight"}
    want |= {f"model.layers.{i}.{s}" for i in range(2) for s in MF_LAYER0}
    assert got == want
    for name in names.expected_shapes(CFG):
        assert mf.from_mf_name(mf.to_mf_name(name)) == name
    assert mf.from_mf_name("model.layers.0.self_attn.q_proj.weight") is None
    fused = mf.mindxh_to_mindformers_tensors(random_tensors(plain), plain, qkv_concat=True)
    assert {n for n in fused if n.startswith("model.layers.0.")} == {
        f"model.layers.0.{s}" for s in MF_LAYER0_FUSED}


def test_fused_qkv_layout_is_grouped_by_kv_head():
    """4 q heads, 2 kv heads, head_dim 2: rows [q0 q1 k0 v0 q2 q3 k1 v1], head by head."""
    label = lambda tag, n: np.array([[f"{tag}{h}"] for h in range(n) for _ in range(2)])
    w = mf.fuse_qkv(label("q", 4), label("k", 2), label("v", 2), num_kv_heads=2)
    assert [r[0] for r in w[::2]] == ["q0", "q1", "k0", "v0", "q2", "q3", "k1", "v1"]
    rng = np.random.default_rng(1)
    for rest in [(5,), ()]:  # weights and biases
        q, k, v = (rng.normal(size=(n * 2, *rest)) for n in (4, 2, 2))
        back = mf.split_qkv(mf.fuse_qkv(q, k, v, 2), num_heads=4, num_kv_heads=2, head_dim=2)
        for a, b in zip((q, k, v), back):
            np.testing.assert_array_equal(a, b)


def test_fused_gate_up_rows_interleave():
    gate, up = np.arange(6.0).reshape(3, 2), -np.arange(6.0).reshape(3, 2)
    w = mf.fuse_gate_up(gate, up)
    np.testing.assert_array_equal(w[0::2], gate)
    np.testing.assert_array_equal(w[1::2], up)
    g2, u2 = mf.split_gate_up(w)
    np.testing.assert_array_equal(g2, gate)
    np.testing.assert_array_equal(u2, up)


@pytest.mark.parametrize("concat", [False, True])
def test_tensors_round_trip_exactly(concat):
    tensors = random_tensors(CFG)
    mf_tensors = mf.mindxh_to_mindformers_tensors(tensors, CFG, concat)
    assert ("model.layers.1.attention.w_qkv.bias" in mf_tensors) == concat
    back = mf.mindformers_to_mindxh_tensors(mf_tensors, CFG, "x.ckpt")
    assert sorted(back) == sorted(tensors)
    for name in tensors:
        assert back[name].tobytes() == tensors[name].tobytes(), name


def test_bad_tensors_are_named():
    plain = dataclasses.replace(CFG, qkv_bias=False)
    good = mf.mindxh_to_mindformers_tensors(random_tensors(plain), plain)
    missing = {k: v for k, v in good.items() if k != "model.layers.1.feed_forward.w3.weight"}
    with pytest.raises(ConversionError, match="'model.layers.1.feed_forward.w3.weight' is missing"):
        mf.mindformers_to_mindxh_tensors(missing, plain, "x.ckpt")
    with pytest.raises(ConversionError, match="unexpected tensor 'model.layers.0.attention.wq.b"):
        mf.mindformers_to_mindxh_tensors({**good, "model.layers.0.attention.wq.bias":
                                          np.zeros(32, np.float32)}, plain, "x.ckpt")
    bad = {**good, "model.norm_out.weight": np.zeros(31, np.float32)}
    with pytest.raises(ConversionError, match="'model.norm_out.weight' has shape"):
        mf.mindformers_to_mindxh_tensors(bad, plain, "x.ckpt")
    with pytest.raises(ConversionError, match="use hf-to-mindxh"):
        mf.mindformers_to_mindxh_tensors({**good, "model.layers.0.self_attn.q_proj.weight":
                                          good["model.layers.0.attention.wq.weight"]}, plain, "x")
    tied = dataclasses.replace(plain, tie_embeddings=True)
    with pytest.raises(ConversionError, match="'lm_head.weight' differs"):
        mf.mindformers_to_mindxh_tensors(good, tied, "x.ckpt")


LLAMA2_7B = {"type": "LlamaConfig", "batch_size": 1, "seq_length": 4096, "hidden_size": 4096,
             "num_layers": 32, "num_heads": 32, "vocab_size": 32000, "multiple_of": 256,
             "rms_norm_eps": 1.0e-5, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
             "ignore_token_id": -100, "compute_dtype": "float16", "param_init_type": "float16",
             "use_past": False, "scaling_factor": 1.0, "theta": 10000, "extend_method": "None",
             "use_flash_attention": True, "offset": 0, "checkpoint_name_or_path": "llama2_7b",
             "repetition_penalty": 1, "max_decode_length": 512, "top_k": 3, "top_p": 1,
             "do_sample": False}
LLAMA31_8B = {**LLAMA2_7B, "n_kv_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
              "theta": 500000, "seq_length": 8192, "max_position_embedding": 131072,
              "extend_method": "LLAMA3", "qkv_concat": True, "scaling_factor": {
                  "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}}


def test_yaml_to_model_config():
    m = mfc.model_config_from_mindformers(LLAMA2_7B)
    assert (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.intermediate_size,
            m.vocab_size, m.max_seq_len, m.rope_theta, m.norm_eps, m.tie_embeddings,
            m.qkv_bias) == (4096, 32, 32, 32, 11008, 32000, 4096, 10000.0, 1e-5, False, False)
    m = mfc.model_config_from_mindformers(LLAMA31_8B, max_seq_len=4096)
    assert (m.num_kv_heads, m.intermediate_size, m.max_seq_len, m.rope_theta) == (
        8, 14336, 4096, 500000.0)
    assert m.rope_scaling == RopeScalingConfig("llama3", 8.0, 1.0, 4.0, 8192)
    assert mfc.model_config_from_mindformers(LLAMA31_8B).max_seq_len == 131072
    # Llama 2 70B's width: 8192 * 8/3 * 1.3, rounded up to a multiple of 4096
    assert mfc.ffn_hidden_size(8192, None, 4096, 1.3) == 28672


@pytest.mark.parametrize("key,value,match", [
    ("attn_proj_has_bias", True, "attn_proj_has_bias"),
    ("extend_method", "NTK", "extend_method"),
    ("type", "Qwen3Config", "type"),
    ("quant_config", {"weight_dtype": "int8"}, "quant_config"),
    ("moe_config", {"expert_num": 8}, "expert_num"),
    ("sliding_window", 4096, "sliding_window"),
])
def test_yaml_refusals_name_the_key(key, value, match):
    with pytest.raises(UnsupportedConfigError, match=match):
        mfc.model_config_from_mindformers({**LLAMA2_7B, key: value}, "run.yaml")


@pytest.mark.parametrize("model", [CFG, dataclasses.replace(
    CFG, tie_embeddings=True, qkv_bias=False, max_seq_len=64, norm_eps=1e-6, rope_theta=5e5,
    rope_scaling=RopeScalingConfig("llama3", 4.0, 1.0, 4.0, 16))])
def test_model_config_round_trips_through_yaml(model):
    text = mfc.mindformers_yaml(mfc.mindformers_config_from_model(model, True), None)
    mc = mfc.model_section(yaml.safe_load(text), "model.yaml")
    back = mfc.model_config_from_mindformers(mc)
    assert dataclasses.asdict(back) == dataclasses.asdict(model)
    assert back.head_dim == model.head_dim


def test_models_mindformers_cannot_hold_are_refused():
    with pytest.raises(ConversionError, match="qk_norm"):
        mfc.mindformers_config_from_model(dataclasses.replace(CFG, qk_norm=True))
    with pytest.raises(ConversionError, match="head_dim"):
        mfc.mindformers_config_from_model(dataclasses.replace(CFG, head_dim=16))


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory):
    from mindxh.tokenizer import train_from_texts

    folder = tmp_path_factory.mktemp("tok")
    texts = ["the quick brown fox jumps over the lazy dog 12 + 30 = 42"] * 50
    train_from_texts(texts, folder / "tokenizer", vocab_size=300)
    return folder / "tokenizer.model"


def mindxh_checkpoint(root, tokenizer, cfg=CFG):
    """A native mindxh run directory holding random weights for `cfg`."""
    from mindxh.checkpoint import store
    from mindxh.config import Recipe, TokenizerConfig, TrainConfig, recipe_to_yaml

    recipe = Recipe(model=cfg, tokenizer=TokenizerConfig(path=str(tokenizer)),
                    train=TrainConfig(seq_len=cfg.max_seq_len))
    tensors = random_tensors(cfg, seed=7)
    store.save_checkpoint(root, 3, tensors, {}, {}, recipe_to_yaml(recipe), 1)
    return tensors


@pytest.mark.parametrize("fmt,dtype,concat", [("ckpt", "float32", True),
                                              ("safetensors", "bfloat16", False)])
def test_files_round_trip(tmp_path, spm_tokenizer, fmt, dtype, concat):
    tensors = mindxh_checkpoint(tmp_path / "run", spm_tokenizer)
    out = mf.mindxh_to_mindformers(tmp_path / "run", tmp_path / "mf", concat, dtype, fmt)
    weights = out / mf.FORMATS[fmt]
    doc = yaml.safe_load((out / "model.yaml").read_text())
    assert doc["model"]["model_config"]["qkv_concat"] is concat
    assert doc["processor"]["tokenizer"]["vocab_file"] == str((out / "tokenizer.model").resolve())
    read = mf.read_mindformers_weights(weights)
    assert ("model.layers.0.attention.w_qkv.weight" in read) == concat
    back = mf.mindformers_to_mindxh(weights, out / "model.yaml", tmp_path / "mx")
    state = json.loads((back / "state.json").read_text())
    assert state["state"]["converted_from"]["format"] == "mindformers"
    from mindxh.checkpoint import store

    got = store.load_checkpoint(back).model
    for name, arr in tensors.items():
        if dtype == "float32":
            assert got[name].tobytes() == arr.tobytes(), name
        else:
            np.testing.assert_allclose(got[name], arr, rtol=2 ** -8, atol=0)
    # and back again: the original's layout and dtype are kept
    again = mf.mindxh_to_mindformers(back, tmp_path / "mf2", fmt=fmt)
    reread = mf.read_mindformers_weights(again / mf.FORMATS[fmt])
    assert sorted(reread) == sorted(read)
    for name in read:
        assert reread[name].tobytes() == read[name].tobytes(), name


def test_a_capped_sequence_length_goes_back_as_it_came(tmp_path, spm_tokenizer):
    """--max-seq-len caps the converted model's RoPE table; the mindformers YAML written back
    keeps the source's seq_length (it came back as the cap: a run merging it trained at 64)."""
    mindxh_checkpoint(tmp_path / "run", spm_tokenizer)
    out = mf.mindxh_to_mindformers(tmp_path / "run", tmp_path / "mf")
    doc = yaml.safe_load((out / "model.yaml").read_text())
    doc["model"]["model_config"]["seq_length"] = 8192
    (out / "model.yaml").write_text(yaml.safe_dump(doc))
    back = mf.mindformers_to_mindxh(out / mf.FORMATS["ckpt"], out / "model.yaml", tmp_path / "mx",
                                    max_seq_len=64)
    again = mf.mindxh_to_mindformers(back, tmp_path / "mf2")
    assert yaml.safe_load((again / "model.yaml").read_text())["model"]["model_config"][
        "seq_length"] == 8192
    bad = {**LLAMA2_7B, "n_kv_heads": "2"}
    with pytest.raises(UnsupportedConfigError, match="n_kv_heads is '2', not an integer"):
        mfc.model_config_from_mindformers(bad, "run.yaml")


def test_a_checkpoint_saved_with_a_wrapper_prefix_is_named_as_such(tmp_path):
    weights = {"network.model.tok_embeddings.embedding_weight": np.zeros((4, 2), np.float32)}
    mf.write_mindformers_weights(tmp_path / "p.ckpt", weights, "float32")
    with pytest.raises(ConversionError, match="no tensor is named model.* .*network.model.tok"):
        mf.read_mindformers_weights(tmp_path / "p.ckpt")


def test_cli(tmp_path, spm_tokenizer):
    mindxh_checkpoint(tmp_path / "run", spm_tokenizer)
    r = run_cli("convert", "mindxh-to-mindformers", str(tmp_path / "run"), str(tmp_path / "mf"),
                "--qkv-concat")
    assert r.returncode == 0, r.stderr
    r = run_cli("convert", "mindformers-recipe", str(tmp_path / "mf" / "model.yaml"))
    assert r.returncode == 0, r.stderr
    recipe = yaml.safe_load(r.stdout)
    assert recipe["model"]["num_kv_heads"] == 2 and recipe["model"]["qkv_bias"] is True
    r = run_cli("convert", "mindformers-to-mindxh", str(tmp_path / "mf" / "model.ckpt"),
                str(tmp_path / "mx"), "--config", str(tmp_path / "run" / "nope.yaml"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "nope.yaml" in r.stderr
