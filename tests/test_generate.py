"""Generation: the cached graph-mode decoder against full recomputation, batching, sampling,
stopping, errors, and `mindxh generate` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, run_cli

from mindxh.config.schema import ModelConfig
from mindxh.generate.sampling import SamplingConfig, log_probs, sample

VOCAB, MAX_LEN, BATCH = 64, 33, 4
CONFIGS = {
    "llama-gqa": dict(num_kv_heads=2),
    "qwen-untied": dict(num_kv_heads=1, qk_norm=True, qkv_bias=True, tie_embeddings=False),
}


class FakeTokenizer:
    """Ids as text; stop ids chosen per test."""

    def __init__(self, eos_id: int = 3, answer_end_id: int | None = 7, unk_id: int = 0,
                 vocab_size: int = VOCAB):
        self.eos_id, self.answer_end_id, self.unk_id = eos_id, answer_end_id, unk_id
        self.vocab_size = vocab_size

    def piece_to_id(self, piece: str) -> int:  # as SentencePiece: an unknown piece gives unk
        assert piece == "</answer>"
        return self.unk_id if self.answer_end_id is None else self.answer_end_id

    def decode(self, ids) -> str:
        return " ".join(str(i) for i in ids)


def _model(name: str):
    from mindxh.models.llama.model import Decoder

    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_heads=4, intermediate_size=48,
                      num_layers=2, max_seq_len=MAX_LEN - 1, init_std=0.3, **CONFIGS[name])
    return Decoder(cfg, seed=5)


@pytest.fixture(scope="module")
def graph_mode():
    import mindspore as ms

    previous = ms.get_context("mode")
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield ms
    ms.set_context(mode=previous)


@pytest.fixture(scope="module")
def gen(graph_mode):
    from mindxh.generate import Generator

    return Generator(_model("llama-gqa"), FakeTokenizer(eos_id=1000, answer_end_id=1001), BATCH,
                     MAX_LEN, prompt_bucket=8)


PROMPTS = [[2, 11, 30], [2, 5, 9, 14, 20, 41, 50, 8, 17, 60, 33], [2, 44], [2, 19, 23, 29, 31, 37],
           [2, 12, 13, 14, 15, 16, 17, 18, 19], [2, 40, 41, 42, 43]]
GREEDY = SamplingConfig(max_new_tokens=12, temperature=0.0)


@pytest.mark.parametrize("window", [0, 4, 5])
@pytest.mark.parametrize("name", CONFIGS)
def test_cached_logits_equal_recomputing_the_whole_sequence(name, window, graph_mode):
    """Teacher-forced: prefill a batch of prompts of different lengths, decode token by token,
    and compare every step's logits with the plain Decoder over the whole sequence (causal, so
    one pass over the final sequences gives what recomputing at each step would). With a
    window, the 23 decode steps flush it into the cache 5 (4) times, ending mid-window."""
    from mindxh.models.llama.cache import CachedDecoder

    ms = graph_mode
    model = _model(name)
    cell = CachedDecoder(model, BATCH, MAX_LEN - 1, window)
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, VOCAB, (BATCH, MAX_LEN - 1)).astype(np.int32)
    lengths = np.array([3, 9, 1, 6], np.int32)
    full = model(ms.Tensor(seqs)).asnumpy()  # [B, T, V]
    block = np.where(np.arange(9) < lengths[:, None], seqs[:, :9], 0).astype(np.int32)
    positions = np.tile(np.arange(9, dtype=np.int32), (BATCH, 1))
    got = cell.prefill(ms.Tensor(block), ms.Tensor(positions), ms.Tensor(lengths - 1)).asnumpy()
    np.testing.assert_allclose(got, full[np.arange(BATCH), lengths - 1], atol=1e-5, rtol=0)
    for step in range(MAX_LEN - 1 - lengths.max()):
        pos = lengths + step
        got = cell.decode(ms.Tensor(seqs[np.arange(BATCH), pos][:, None]),
                          ms.Tensor(pos[:, None])).asnumpy()
        np.testing.assert_allclose(got, full[np.arange(BATCH), pos], atol=1e-5, rtol=0,
                                   err_msg=f"decode step {step}")


def test_prefill_over_its_own_block_equals_attending_over_the_whole_cache(graph_mode):
    """`prefill` attends over the prompt block's own keys; the general call attends over the
    whole cache through the position mask. Same logits, same cache writes."""
    from mindxh.models.llama.cache import CachedDecoder

    ms = graph_mode
    model = _model("llama-gqa")
    own, whole = (CachedDecoder(model, BATCH, MAX_LEN - 1) for _ in range(2))
    rng = np.random.default_rng(1)
    block = ms.Tensor(rng.integers(0, VOCAB, (BATCH, 16)).astype(np.int32))
    positions = ms.Tensor(np.tile(np.arange(16, dtype=np.int32), (BATCH, 1)))
    last = ms.Tensor(np.array([15, 3, 0, 9], np.int32))
    np.testing.assert_allclose(own.prefill(block, positions, last).asnumpy(),
                               whole(block, positions, last).asnumpy(), atol=1e-6, rtol=0)
    for a, b in zip(own.caches, whole.caches):
        assert np.array_equal(a.k.asnumpy(), b.k.asnumpy()) and np.array_equal(a.v.asnumpy(), b.v.asnumpy())
        assert np.abs(a.k.asnumpy()[:, :, :16]).min() > 0  # the block was written


def test_cached_cell_runs_the_decoders_own_weights_under_their_own_names(graph_mode):
    """The cache cell adds only its caches; the Decoder's parameters keep their names (a
    checkpoint loads into either) and are shared, so a weight update reaches generation."""
    from mindxh.models.llama.cache import CachedDecoder

    ms = graph_mode
    model = _model("qwen-untied")
    names = [p.name for p in model.get_parameters()]
    cell = CachedDecoder(model, BATCH, MAX_LEN - 1, window=4)
    assert [p.name for p in model.get_parameters()] == names
    params = list(cell.get_parameters())
    assert [p.name for p in params[:len(names)]] == names  # the model's own, not prefixed
    extra = [p.name.split(".")[-1] for p in params[len(names):]]  # caches, windows: each once
    assert sorted(extra) == sorted(["k", "v", "window_k", "window_v"] * model.cfg.num_layers)
    assert len({p.name for p in params}) == len(params)
    assert [p.name for p in cell.trainable_params()] == names
    tokens = ms.Tensor(np.array([[2, 9, 4]] * BATCH, np.int32))
    positions = ms.Tensor(np.tile(np.arange(3, dtype=np.int32), (BATCH, 1)))
    last = ms.Tensor(np.full(BATCH, 2, np.int32))
    before = cell(tokens, positions, last).asnumpy()
    model.norm.weight.set_data(ms.Tensor(np.full(model.cfg.hidden_size, 2.0, np.float32)))
    after = cell(tokens, positions, last).asnumpy()
    np.testing.assert_allclose(after, 2.0 * before, rtol=1e-5, atol=1e-5)  # untied head: linear in g
    np.testing.assert_allclose(after, model(tokens).asnumpy()[:, 2], atol=1e-5, rtol=0)


def test_decode_window_is_chosen_by_cache_size_and_checked():
    from mindxh.models.llama.cache import DECODE_WINDOW, CachedDecoder, decode_window

    assert decode_window(1, 4, 288, 32) == 0  # 147 KB per layer: the window's kernels cost more
    assert decode_window(32, 8, 288, 64) == DECODE_WINDOW  # 19 MB: the cache write dominates
    assert decode_window(64, 8, 8, 512) == 8  # never wider than the cache
    with pytest.raises(ValueError, match="window=40 must be in"):
        CachedDecoder(_model("llama-gqa"), BATCH, MAX_LEN - 1, window=40)


def test_windowed_generation_gives_the_tokens_of_direct_cache_writes(graph_mode):
    """Same weights, window 0 and 5: 12 tokens flush the window twice and end mid-window,
    the second chunk starts a fresh window; greedy tokens equal, log-probs to float error."""
    from mindxh.generate import Generator

    model, tok = _model("llama-gqa"), FakeTokenizer(eos_id=1000, answer_end_id=1001)
    direct = Generator(model, tok, BATCH, MAX_LEN, prompt_bucket=8, window=0)
    windowed = Generator(model, tok, BATCH, MAX_LEN, prompt_bucket=8, window=5)
    assert direct.cell.window == 0 and windowed.cell.window == 5
    want, got = direct.generate(PROMPTS, GREEDY), windowed.generate(PROMPTS, GREEDY)
    assert [c.ids for c in got] == [c.ids for c in want]
    np.testing.assert_allclose([c.logprobs for c in got], [c.logprobs for c in want], atol=1e-5)


def test_batched_prompts_match_one_by_one_and_greedy_is_deterministic(gen):
    batched = gen.generate(PROMPTS, GREEDY)  # 6 prompts: two chunks of 4, the last padded
    assert gen.last_stats.chunks == 2 and gen.last_stats.new_tokens == 6 * 12
    assert gen.last_stats.tokens_per_s > 0
    assert len({tuple(c.ids) for c in batched}) > 1
    for prompt, completion in zip(PROMPTS, batched):
        alone = gen.generate([prompt], GREEDY)[0]
        assert alone.ids == completion.ids
        np.testing.assert_allclose(alone.logprobs, completion.logprobs, atol=1e-5)
        assert completion.finish_reason == "length" and len(completion.ids) == 12
        assert completion.text == " ".join(map(str, completion.ids))
    again = gen.generate(PROMPTS, GREEDY)
    assert [c.ids for c in again] == [c.ids for c in batched]
    assert [c.logprobs for c in again] == [c.logprobs for c in batched]


def test_sampling_is_reproducible_per_seed_and_top_k1_or_tiny_top_p_is_greedy(gen):
    def run(**kw):
        return [c.ids for c in gen.generate(PROMPTS, SamplingConfig(max_new_tokens=12, **kw))]

    greedy = run(temperature=0.0)
    first = run(temperature=1.0, seed=1)
    assert first == run(temperature=1.0, seed=1)
    assert first != run(temperature=1.0, seed=2)
    assert first != greedy
    assert run(temperature=1.0, top_k=1, seed=3) == greedy
    assert run(temperature=1.5, top_p=1e-6, seed=4) == greedy


def test_logprobs_are_log_softmax_of_the_raw_logits(gen, graph_mode):
    """Behaviour log-probs at temperature 1 whatever temperature/top-k sampled the token."""
    prompt = PROMPTS[1]
    hot = gen.generate([prompt], SamplingConfig(max_new_tokens=8, temperature=0.5, top_k=5))[0]
    logits = gen.cell.model(graph_mode.Tensor(np.array([prompt + hot.ids], np.int32))).asnumpy()[0]
    steps = logits[len(prompt) - 1:-1].astype(np.float64)
    ref = steps - np.log(np.exp(steps).sum(-1, keepdims=True))
    np.testing.assert_allclose(hot.logprobs, ref[np.arange(8), hot.ids], atol=1e-5)


def test_stop_tokens_end_a_row(graph_mode):
    from mindxh.generate import Generator

    model = _model("llama-gqa")
    probe = Generator(model, FakeTokenizer(1000, 1001), BATCH, MAX_LEN, prompt_bucket=8)
    ids = [c.ids for c in probe.generate(PROMPTS[:3], GREEDY)]
    eos, answer_end = ids[0][3], ids[1][5]
    gen = Generator(model, FakeTokenizer(eos, answer_end), BATCH, MAX_LEN, prompt_bucket=8)
    out = gen.generate(PROMPTS[:3], GREEDY)
    for full, c in zip(ids, out):
        cut = next((i for i, t in enumerate(full) if t in (eos, answer_end)), None)
        if cut is None:
            assert c.finish_reason == "length" and c.ids == full
        else:
            assert c.ids == full[:cut + 1]  # the stop token is kept
            assert c.finish_reason == ("eos" if full[cut] == eos else "stop")
    assert out[0].finish_reason == "eos" and len(out[0].ids) <= 4
    assert gen.last_stats.new_tokens == sum(len(c.ids) for c in out)


def test_ids_past_the_tokenizers_vocabulary_are_never_generated(graph_mode):
    """A model vocabulary padded past the tokenizer's (converted Qwen models do this) has ids
    that decode to nothing: greedy and sampled tokens stay below the tokenizer's size, and the
    reported log-probs are still those of the model's whole distribution."""
    from mindxh.generate import Generator

    model = _model("llama-gqa")
    whole = Generator(model, FakeTokenizer(1000, 1001), BATCH, MAX_LEN, prompt_bucket=8)
    assert max(max(c.ids) for c in whole.generate(PROMPTS, GREEDY)) >= 40  # the test can fail
    padded = Generator(model, FakeTokenizer(1000, 1001, vocab_size=40), BATCH, MAX_LEN,
                       prompt_bucket=8)
    for cfg in (GREEDY, SamplingConfig(max_new_tokens=12, temperature=1.0, seed=3)):
        out = padded.generate(PROMPTS, cfg)
        assert max(max(c.ids) for c in out) < 40
    first = padded.generate(PROMPTS[:1], GREEDY)[0]
    logits = model_logits(model, PROMPTS[0])
    assert first.ids[0] == int(logits[:40].argmax())
    assert first.logprobs[0] == pytest.approx(float(log_probs(logits[None], np.array([first.ids[0]]))[0]),
                                              abs=1e-5)


def model_logits(model, prompt):
    """The Decoder's logits after `prompt`'s last token (a full forward, no cache)."""
    import mindspore as ms

    return model(ms.Tensor(np.array([prompt], np.int32))).asnumpy()[0, -1]


def test_a_tokenizer_without_answer_end_stops_at_eos_only_not_at_unk(graph_mode):
    """SentencePiece maps an unknown piece to <unk>: a tokenizer lacking `</answer>` must not
    make every <unk> the model emits a stop token."""
    from mindxh.generate import Generator

    model = _model("llama-gqa")
    probe = Generator(model, FakeTokenizer(1000, 1001), BATCH, MAX_LEN, prompt_bucket=8)
    full = probe.generate(PROMPTS[:1], GREEDY)[0].ids
    gen = Generator(model, FakeTokenizer(1000, None, unk_id=full[2]), BATCH, MAX_LEN,
                    prompt_bucket=8)
    out = gen.generate(PROMPTS[:1], GREEDY)[0]
    assert out.ids == full and out.finish_reason == "length"


def test_prompt_errors_are_clear(gen):
    from mindxh.generate import GenerationError

    with pytest.raises(GenerationError, match=r"prompt 1 has 30 tokens.*at most 21"):
        gen.generate([[2, 3], [2] * 30], GREEDY)
    with pytest.raises(GenerationError, match="prompt 0 is empty"):
        gen.generate([[]], GREEDY)
    with pytest.raises(GenerationError, match="outside the model's vocabulary"):
        gen.generate([[2, VOCAB]], GREEDY)
    with pytest.raises(GenerationError, match="max_len"):
        type(gen)(gen.cell.model, FakeTokenizer(), 2, MAX_LEN + 1)


def test_sample_filters_and_log_probs():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 4000))
    u = np.random.default_rng(0).random(4000)
    counts = np.bincount(sample(logits, SamplingConfig(temperature=1.0), u), minlength=4) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    top2 = sample(logits, SamplingConfig(temperature=1.0, top_k=2), u)
    assert set(top2) == {0, 1} and abs(np.mean(top2 == 0) - 0.5 / 0.8) < 0.03
    nucleus = sample(logits, SamplingConfig(temperature=1.0, top_p=0.7), u)
    assert set(nucleus) == {0, 1}  # 0.5 < 0.7 needs the second token, not the third
    np.testing.assert_allclose(log_probs(logits[:2], np.array([0, 3])), np.log([0.5, 0.05]))
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        SamplingConfig(seed=-1)


def test_generate_cli_end_to_end(tmp_path, tiny_tokenizer):
    run = tmp_path / "run"
    res = run_cli("train", str(TINY), "--output-dir", str(run), "--max-steps", "2", "--no-progress",
                  "--set", f"tokenizer.path={tiny_tokenizer}", "--set", "data.heldout_batches=1",
                  "--set", "train.batch_size=4", "--set", "train.seq_len=32")
    assert res.returncode == 0, res.stderr[-3000:]
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text(json.dumps({"prompt": "Mia has 3 pens."}) + "\n" + json.dumps("2+2?") + "\n"
                            + json.dumps("one\u2028two\x85", ensure_ascii=False) + "\n")  # not line ends
    res = run_cli("generate", "--checkpoint", str(run), "--prompt", "What is 1+2?",
                  "--prompts-file", str(prompts_file), "--max-new-tokens", "5", "--temperature", "1",
                  "--seed", "7", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["What is 1+2?", "Mia has 3 pens.", "2+2?", "one\u2028two\x85"]
    for r in rows:
        assert 1 <= len(r["ids"]) == len(r["logprobs"]) <= 5
        assert r["finish_reason"] in ("eos", "stop", "length")
    res = run_cli("generate", "--checkpoint", str(run / "checkpoints" / "step-00000099"),
                  "--prompt", "hi")
    assert res.returncode == 2 and "step-00000099 does not exist" in res.stderr
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    surrogate = tmp_path / "surrogate.jsonl"
    surrogate.write_text('{"prompt": "a\\ud800"}\n')
    for args, needle in ((["--prompts-file", str(latin1)], "latin1.jsonl, line 2: not UTF-8 text"),
                         (["--prompts-file", str(surrogate)], "prompt 0 is not valid Unicode"),
                         (["--prompt", "hi", "--temperature", "nan"], "finite number >= 0"),
                         (["--prompt", "hi", "--seed", "-1"], "--seed: must be a non-negative")):
        res = run_cli("generate", "--checkpoint", str(run), *args)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, \
            res.stderr[-2000:]
