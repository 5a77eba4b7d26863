"""mindformers interchange against mindformers' own LlamaForCausalLM (1.9.0, CPU, float32).

Needs mindformers, which pins mindspore 2.9: ci/run.sh runs this module in .venv-mf
(`pip install -e '.[mindformers,test]'`). Elsewhere conftest.py leaves it out of collection;
there is no skip here, so a missing mindformers fails loudly where the module is asked for.
Each model is random and tiny; mindformers runs with the only settings its Llama has CPU
kernels for (no flash attention, unfused RMSNorm, sliced RoPE).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import yaml

os.environ.setdefault("LOCAL_DEFAULT_PATH", tempfile.mkdtemp(prefix="mindformers-"))  # its logs
import mindformers  # noqa: E402,F401
import mindspore as ms  # noqa: E402
from mindformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from mindformers.utils.convert_utils import ffn_concat_hf2mg, qkv_concat_hf2mg  # noqa: E402

from mindxh.interop import mindformers as mf  # noqa: E402
from mindxh.interop import mindformers_config as mfc  # noqa: E402

SEQ, VOCAB = 16, 320
_BASE = dict(batch_size=2, seq_length=SEQ, hidden_size=64, num_layers=2, num_heads=4,
             n_kv_heads=2, intermediate_size=96, vocab_size=VOCAB, rms_norm_eps=1e-6)
VARIANTS = {
    "gqa-untied": dict(tie_word_embeddings=False),
    "tied-qkv-concat": dict(tie_word_embeddings=True, qkv_concat=True, theta=500000.0),
    "bias-concat-llama3": dict(qkv_has_bias=True, qkv_concat=True, max_position_embedding=64,
                               extend_method="LLAMA3", scaling_factor={
                                   "factor": 4.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8}),
}
CPU_FLAGS = dict(compute_dtype="float32", param_init_type="float32",
                 layernorm_compute_type="float32", softmax_compute_type="float32",
                 rotary_dtype="float32", use_flash_attention=False, fused_rms_norm=False,
                 use_rope_slice=True)
# no 0: mindformers masks pad_token_id (0) out of attention, which mindxh's forward does not do
TOKENS = np.random.default_rng(0).integers(1, VOCAB, size=(2, SEQ)).astype(np.int32)


@pytest.fixture(scope="module", autouse=True)
def pynative():
    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory):
    from mindxh.tokenizer import train_from_texts

    folder = tmp_path_factory.mktemp("tok")
    train_from_texts(["the quick brown fox jumps over the lazy dog 12 + 30 = 42"] * 50,
                     folder / "tokenizer", vocab_size=300)
    return folder / "tokenizer.model"


def build(model_config: dict, seed: int | None = None):
    """mindformers' model for a model_config block (random weights when `seed` is given)."""
    settings = {k: v for k, v in model_config.items() if k != "type"}
    net = LlamaForCausalLM(LlamaConfig(**{**settings, **CPU_FLAGS}))
    net.set_train(False)
    if seed is not None:
        rng = np.random.default_rng(seed)
        for _, p in net.parameters_and_names():
            base = 1.0 if "norm" in p.name else 0.0
            p.set_data(ms.Tensor((base + 0.1 * rng.normal(size=p.shape)).astype(np.float32)))
    return net


def mf_logits(net) -> np.ndarray:
    return net(ms.Tensor(TOKENS))[0].asnumpy()


def mindxh_logits(checkpoint) -> np.ndarray:
    from mindxh.checkpoint.inference import load_for_inference

    model, _, _, _ = load_for_inference(checkpoint)
    return model(ms.Tensor(TOKENS)).asnumpy()


def write_yaml(path, model_config: dict, tokenizer) -> None:
    doc = {"model": {"model_config": {"type": "LlamaConfig", **CPU_FLAGS, **model_config},
                     "arch": {"type": "LlamaForCausalLM"}},
           "processor": {"tokenizer": {"type": "LlamaTokenizer", "vocab_file": str(tokenizer)}}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")


def load_into(net, ckpt_path) -> None:
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(str(ckpt_path)))
    assert not not_loaded and not unused, (not_loaded, unused)


def test_fused_layouts_equal_mindformers_converters():
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(n * 16, 64)).astype(np.float32) for n in (4, 2, 2))
    ours = mf.fuse_qkv(q, k, v, num_kv_heads=2)
    np.testing.assert_array_equal(ours, qkv_concat_hf2mg(np.concatenate([q, k, v]), 4, 2, 64))
    gate, up = (rng.normal(size=(96, 64)).astype(np.float32) for _ in range(2))
    np.testing.assert_array_equal(mf.fuse_gate_up(gate, up),
                                  ffn_concat_hf2mg(np.concatenate([gate, up]), 96))


def test_parameter_names_match_the_converter():
    for concat in (False, True):
        cfg = {**_BASE, "qkv_has_bias": True, "qkv_concat": concat}
        real = {p.name: tuple(p.shape) for _, p in build(cfg).parameters_and_names()}
        model = mfc.model_config_from_mindformers(cfg)
        ours = mf.mindxh_to_mindformers_tensors(
            {n: np.zeros(s, np.float32) for n, s in mf.names.expected_shapes(model).items()},
            model, concat)
        assert {n: a.shape for n, a in ours.items()} == real


@pytest.mark.parametrize("variant", VARIANTS)
def test_both_ways_against_mindformers(variant, tmp_path, spm_tokenizer):
    cfg = {**_BASE, **VARIANTS[variant]}
    net = build(cfg, seed=1)
    want = mf_logits(net)
    ms.save_checkpoint(net, str(tmp_path / "llama.ckpt"))  # as mindformers' trainer saves
    write_yaml(tmp_path / "run.yaml", cfg, spm_tokenizer)
    mf.mindformers_to_mindxh(tmp_path / "llama.ckpt", tmp_path / "run.yaml", tmp_path / "mx")
    np.testing.assert_allclose(mindxh_logits(tmp_path / "mx"), want, rtol=0, atol=1e-4)

    # back in the original layout: mindformers builds from the written YAML, loads every tensor
    out = mf.mindxh_to_mindformers(tmp_path / "mx", tmp_path / "mf")
    written = mfc.model_section(yaml.safe_load((out / "model.yaml").read_text()), "model.yaml")
    assert written["qkv_concat"] == cfg.get("qkv_concat", False)
    again = build({**written, "batch_size": 2, "seq_length": SEQ})
    load_into(again, out / "model.ckpt")
    np.testing.assert_array_equal(mf_logits(again), want)
    before = mf.read_mindformers_weights(tmp_path / "llama.ckpt")
    after = mf.read_mindformers_weights(out / "model.ckpt")
    assert sorted(before) == sorted(after)
    for name in before:
        assert before[name].tobytes() == after[name].tobytes(), name

    # and in the other layout (fused <-> unfused), which mindformers computes the same
    flipped = not cfg.get("qkv_concat", False)
    out = mf.mindxh_to_mindformers(tmp_path / "mx", tmp_path / "mf-flip", qkv_concat=flipped)
    other = build({**cfg, "qkv_concat": flipped})
    load_into(other, out / "model.ckpt")
    np.testing.assert_allclose(mf_logits(other), want, rtol=0, atol=1e-5)


def test_bf16_checkpoint(tmp_path, spm_tokenizer):
    """mindformers' usual dtype: read widened, written back as bf16 bit for bit."""
    cfg = {**_BASE, "param_init_type": "bfloat16"}
    net = build(_BASE, seed=2)
    ms.save_checkpoint([{"name": p.name, "data": ms.Tensor(p.asnumpy(), ms.bfloat16)}
                        for _, p in net.parameters_and_names()], str(tmp_path / "bf16.ckpt"))
    write_yaml(tmp_path / "run.yaml", cfg, spm_tokenizer)
    mf.mindformers_to_mindxh(tmp_path / "bf16.ckpt", tmp_path / "run.yaml", tmp_path / "mx")
    out = mf.mindxh_to_mindformers(tmp_path / "mx", tmp_path / "mf")
    a = ms.load_checkpoint(str(tmp_path / "bf16.ckpt"))
    b = ms.load_checkpoint(str(out / "model.ckpt"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert b[name].dtype == ms.bfloat16
        assert a[name].astype(ms.float32).asnumpy().tobytes() == \
            b[name].astype(ms.float32).asnumpy().tobytes(), name
