"""Parameter counts from a ModelConfig alone (mindxh.planner.params) are exact: a published
model's count, and the real MindSpore model's count at tiny sizes for every block option."""
from __future__ import annotations

import pytest

from mindxh.config import ModelConfig
from mindxh.planner.params import layer_parameters, parameter_counts, stage_parameters

LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
                 intermediate_size=11008, max_seq_len=4096, tie_embeddings=False)


def test_llama2_7b_count_is_the_published_one():
    # per layer: q, k, v, o 4 * 4096^2 = 67,108,864; MLP 3 * 4096 * 11008 = 135,266,304;
    # two RMSNorm gains 8,192 -> 202,383,360; x 32 = 6,476,267,520.
    # + embedding and untied head 2 * 32000 * 4096 = 262,144,000 + final norm 4,096.
    counts = parameter_counts(ModelConfig(**LLAMA2_7B))
    assert counts["total"] == 6_738_415_616
    assert counts["embedding"] == 131_072_000
    assert counts["non_embedding"] == 6_738_415_616 - 131_072_000


def test_llama2_70b_count():
    # GQA: k, v are 8192 x 1024. Per layer 2*8192^2 + 2*8192*1024 + 3*8192*28672 + 2*8192
    cfg = ModelConfig(vocab_size=32000, hidden_size=8192, num_layers=80, num_heads=64,
                      num_kv_heads=8, intermediate_size=28672, tie_embeddings=False)
    per_layer = 2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    assert layer_parameters(cfg).total == per_layer
    assert parameter_counts(cfg)["total"] == 80 * per_layer + 2 * 32000 * 8192 + 8192
    assert parameter_counts(cfg)["total"] == 68_976_648_192


def test_vocab_from_the_tokenizer_when_null():
    cfg = ModelConfig(vocab_size=None, hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=4,
                      intermediate_size=128)
    assert parameter_counts(cfg, 100)["embedding"] == 6400


def test_stages_hold_every_parameter_once_when_untied():
    cfg = ModelConfig(**{**LLAMA2_7B, "num_layers": 4})
    total = parameter_counts(cfg)["total"]
    assert sum(stage_parameters(cfg, 32000, 1, 2, False, i) for i in range(2)) == total
    # tensor parallel splits the matrices, not the norms; vocab_parallel splits the tables
    layer = layer_parameters(cfg)
    one = stage_parameters(cfg, 32000, 4, 1, True, 0)
    assert one == 4 * (layer.split // 4 + layer.replicated) + 2 * 32000 * 4096 // 4 + 4096


SHAPES = [
    dict(num_heads=4, num_kv_heads=4, tie_embeddings=True),  # plain, tied
    dict(num_heads=4, num_kv_heads=2, tie_embeddings=False),  # GQA, untied
    dict(num_heads=4, num_kv_heads=1, tie_embeddings=True, qkv_bias=True),  # MQA, Qwen2 bias
    dict(num_heads=4, num_kv_heads=2, tie_embeddings=False, qk_norm=True, head_dim=32),  # Qwen3
    dict(num_heads=8, num_kv_heads=4, tie_embeddings=False, qkv_bias=True, qk_norm=True),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_count_equals_the_built_models(shape):
    from mindxh.models.accounting import count_parameters
    from mindxh.models.llama.model import build_model

    cfg = ModelConfig(vocab_size=96, hidden_size=64, num_layers=2, intermediate_size=96,
                      max_seq_len=16, **shape)
    assert parameter_counts(cfg) == count_parameters(build_model(cfg, 0))
