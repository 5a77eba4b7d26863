"""GRPO pieces: group advantages, rollout batches, the clipped objective and its update."""
import dataclasses

import mindspore as ms
import numpy as np
import pytest

from mindxh.config.schema import ModelConfig, OptimConfig
from mindxh.data.packing import IGNORE
from mindxh.rl.rollout import build_batch, group_advantages, micro_batches, shuffle_rewards


def test_advantages_are_normalised_within_each_group():
    rewards = np.array([[1.0, 0.0, 0.0, 1.0], [0.1, 0.1, 0.1, 0.1], [1.1, 0.1, 0.0, 0.0]])
    adv, kept = group_advantages(rewards)
    assert kept.tolist() == [True, False, True]
    assert np.allclose(adv[0], [1, -1, -1, 1], atol=1e-3)
    assert np.all(adv[1] == 0)  # equal rewards say nothing
    assert abs(adv[2].mean()) < 1e-6 and adv[2].argmax() == 0
    assert np.isclose(adv[2].std(), 1.0, atol=1e-3)
    _, kept_all = group_advantages(rewards, skip_uniform=False)
    assert kept_all.all()
    with pytest.raises(ValueError, match="group >= 2"):
        group_advantages(np.ones((3, 1)))


def test_shuffled_rewards_keep_values_but_lose_their_owner():
    rewards = np.arange(32, dtype=float).reshape(4, 8)
    shuffled = shuffle_rewards(rewards, np.random.default_rng(0))
    assert sorted(shuffled.ravel()) == sorted(rewards.ravel())
    assert not np.array_equal(shuffled, rewards)


def test_batch_reads_only_response_tokens_of_kept_groups():
    prompts = [[2, 10, 11], [2, 10, 11], [2, 12], [2, 12]]
    responses = [[20, 21, 3], [22, 3], [23, 3], [24, 25, 26, 3]]
    batch = build_batch(prompts, responses, np.array([[0.5, -0.5], [0.0, 0.0]]),
                        np.array([True, False]), length=8)
    assert batch.input_ids[0].tolist() == [2, 10, 11, 20, 21, 0, 0, 0]
    assert batch.targets[0].tolist() == [IGNORE, IGNORE, 20, 21, 3, IGNORE, IGNORE, IGNORE]
    assert batch.mask[0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert batch.mask[2:].sum() == 0  # the uniform group is not trained on
    assert batch.advantages.tolist() == [0.5, -0.5, 0.0, 0.0]
    # token weights: the token-level mean over the kept groups' response tokens (3 + 2)
    np.testing.assert_array_equal(batch.weights, batch.mask / 5)
    with pytest.raises(ValueError, match="exceed"):
        build_batch(prompts, [[1] * 9] * 4, np.zeros((2, 2)), np.ones(2, bool), length=8)


def test_micro_batches_hold_the_rows_that_carry_loss_padded_with_weightless_rows():
    rng = np.random.default_rng(0)
    groups, size = 5, 4
    prompts = [[2, 5 + g] for g in range(groups) for _ in range(size)]
    responses = [list(rng.integers(4, 30, rng.integers(1, 6))) + [3] for _ in prompts]
    kept = np.array([True, False, True, True, False])
    adv = rng.normal(size=(groups, size)) * kept[:, None]
    batch = build_batch(prompts, responses, adv, kept, length=12)
    pieces = micro_batches(batch, 5)
    assert len(pieces) == 3  # 12 live rows (3 kept groups) in pieces of 5, not 20 rows in 4
    rows = np.concatenate([p.input_ids for p in pieces])
    live = np.flatnonzero(np.repeat(kept, size))
    np.testing.assert_array_equal(rows[:12], batch.input_ids[live])  # in order
    last = pieces[-1]
    assert last.input_ids.shape == (5, 12) and last.mask[2:].sum() == 0 and last.weights[2:].sum() == 0
    assert (last.targets[2:] == IGNORE).all() and (last.advantages[2:] == 0).all()
    # the pieces' weights add up to the batch's token-level mean
    assert np.isclose(sum(float(p.weights.sum()) for p in pieces), 1.0, atol=1e-6)
    assert len(micro_batches(batch, 12)) == 1 and len(micro_batches(batch, 100)) == 1
    nothing = build_batch(prompts, responses, np.zeros((groups, size)), np.zeros(groups, bool), 12)
    assert micro_batches(nothing, 5) == []
    with pytest.raises(ValueError, match="rows"):
        micro_batches(batch, 0)


@pytest.fixture(scope="module")
def tiny_policy():
    from mindxh.models.llama.model import Decoder

    ms.set_context(mode=ms.GRAPH_MODE)
    cfg = ModelConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      intermediate_size=64, max_seq_len=32)
    return Decoder(cfg, 0)


def _batch(n=4, t=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 40, (n, t)).astype(np.int32)
    tgt = rng.integers(4, 40, (n, t)).astype(np.int32)
    tgt[:, :4] = IGNORE
    mask = (tgt != IGNORE).astype(np.float32)
    return ids, tgt, mask


def test_objective_with_ratio_one_is_reinforce_with_a_group_baseline(tiny_policy):
    from mindxh.rl.objective import GRPOLoss, TokenLogProbs

    ids, tgt, mask = (ms.Tensor(a) for a in _batch())
    m = mask.asnumpy()
    weights = ms.Tensor(m / m.sum())
    adv = np.array([1.0, -1.0, 0.5, -0.5], np.float32)
    old = TokenLogProbs(tiny_policy)(ids, tgt)
    loss_cell = GRPOLoss(tiny_policy, 0.2, 0.04)
    loss, kl, clip = loss_cell(ids, tgt, weights, ms.Tensor(adv), old, old)
    expected = -(adv[:, None] * m).sum() / m.sum()  # ratio 1: pg = -A on every response token
    assert np.isclose(float(loss.asnumpy()), expected, atol=1e-5)
    assert abs(float(kl.asnumpy())) < 1e-6 and float(clip.asnumpy()) == 0.0
    # the first pass needs no old log-probs (None: the current ones, held constant), and
    # without a reference model the kl figure is 0
    loss, kl, clip = loss_cell(ids, tgt, weights, ms.Tensor(adv), None, None)
    assert np.isclose(float(loss.asnumpy()), expected, atol=1e-5)
    assert float(kl.asnumpy()) == 0.0 and float(clip.asnumpy()) == 0.0
    # log-probs are real log-probabilities of the target ids
    logits = tiny_policy(ids).asnumpy()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    t = tgt.asnumpy()
    assert np.isclose(old.asnumpy()[0, 5], logp[0, 5, t[0, 5]], atol=1e-4)


def test_update_raises_the_probability_of_rewarded_responses(tiny_policy):
    from mindxh.models.llama.model import Decoder
    from mindxh.rl.objective import GRPOLoss, GRPOStats, GRPOStep, TokenLogProbs
    from mindxh.train.optim import AdamW

    model = Decoder(tiny_policy.cfg, 1)
    opt = AdamW(model.trainable_params(), OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.0), 20)
    step = GRPOStep(GRPOLoss(model, 0.2, 0.0), opt)
    logprobs = TokenLogProbs(model)
    ids, tgt, mask = (ms.Tensor(a) for a in _batch())
    weights = ms.Tensor(mask.asnumpy() / mask.asnumpy().sum())
    adv = ms.Tensor(np.array([1.0, -1.0, 1.0, -1.0], np.float32))
    before = (logprobs(ids, tgt).asnumpy() * mask.asnumpy()).sum(1)
    old = logprobs(ids, tgt)  # behaviour policy, fixed for all passes over this batch
    clip_seen = 0.0
    for _ in range(4):  # several passes on one batch: the ratio moves and clipping engages
        stats = GRPOStats.of(step(ids, tgt, weights, adv, old, old))
        clip_seen = max(clip_seen, stats.clip_fraction)
        assert stats.ok and stats.grad_norm >= 0 and 0 < stats.lr <= 1e-2
    after = (logprobs(ids, tgt).asnumpy() * mask.asnumpy()).sum(1)
    delta = after - before
    assert delta[0] > 0 and delta[2] > 0 and delta[1] < 0 and delta[3] < 0
    assert clip_seen > 0


@pytest.mark.parametrize("epochs", [1, 2])
def test_micro_batched_update_matches_the_update_in_one_piece(tiny_policy, epochs):
    """GRPOAccumulate over micro-batches + ApplyStep = GRPOStep on the whole batch: the same
    loss, statistics and new weights (to float rounding). The first pass of each runs with
    old log-probs None, the others with the behaviour policy's, as the GRPO stage does."""
    from mindxh.models.llama.model import Decoder
    from mindxh.rl.objective import GRPOAccumulate, GRPOLoss, GRPOStats, GRPOStep, TokenLogProbs
    from mindxh.rl.rollout import RolloutBatch
    from mindxh.train.optim import AdamW
    from mindxh.train.step import ApplyStep

    ids, tgt, mask = _batch(n=6, seed=1)
    mask[4] = 0  # a row of a skipped group
    tgt[4] = IGNORE
    adv = np.array([1.0, -1.0, 0.5, -0.5, 0.0, 2.0], np.float32)
    batch = RolloutBatch(ids, tgt, mask, adv, mask / mask.sum())
    optim = OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.0)

    def policy():
        model = Decoder(tiny_policy.cfg, 1)
        return model, AdamW(model.trainable_params(), optim, 20), TokenLogProbs(model)

    def tensors(b):
        return tuple(ms.Tensor(a) for a in (b.input_ids, b.targets, b.weights, b.advantages))

    whole_model, opt, logprobs = policy()
    step = GRPOStep(GRPOLoss(whole_model, 0.2, 0.0), opt)
    inputs = tensors(batch)
    old = logprobs(inputs[0], inputs[1]) if epochs > 1 else None
    whole = [GRPOStats.of(step(*inputs, old, None)) for _ in range(epochs)]

    split_model, opt, logprobs = policy()
    accumulate = GRPOAccumulate(GRPOLoss(split_model, 0.2, 0.0), opt)
    apply = ApplyStep(accumulate, opt)
    pieces = [tensors(p) for p in micro_batches(batch, 2)]
    assert len(pieces) == 3  # 5 live rows: 2 + 2 + 1 and a padding row
    olds = [logprobs(p[0], p[1]) if epochs > 1 else None for p in pieces]
    split = []
    for _ in range(epochs):
        parts = [accumulate(*p, o, None) for p, o in zip(pieces, olds)]
        sums = [sum(float(x[i].asnumpy()) for x in parts) for i in range(3)]
        split.append(GRPOStats.of_parts(sums, apply(ms.Tensor(np.float32(sums[0])))))
    for a, b in zip(whole, split):
        assert a.ok and b.ok
        assert np.isclose(a.loss, b.loss, atol=1e-6) and np.isclose(a.grad_norm, b.grad_norm, rtol=1e-4)
        assert np.isclose(a.clip_fraction, b.clip_fraction, atol=1e-6) and a.lr == b.lr
    if epochs > 1:
        assert whole[-1].clip_fraction > 0  # the second pass moved the ratio
    for p, q in zip(whole_model.trainable_params(), split_model.trainable_params()):
        np.testing.assert_allclose(p.asnumpy(), q.asnumpy(), atol=1e-5, err_msg=p.name)
    moved = whole_model.trainable_params()[1].asnumpy() - Decoder(tiny_policy.cfg, 1).trainable_params()[1].asnumpy()
    assert np.abs(moved).max() > 1e-4  # the update did something to compare
    assert all(float(np.abs(b.asnumpy()).max()) == 0.0 for b in accumulate.buffers)  # cleared


def test_grpo_refuses_a_directory_with_a_previous_run(tmp_path):
    """The shared run directory guard: one error class, raised before anything is built."""
    from mindxh.checkpoint.store import save_checkpoint
    from mindxh.config.schema import Recipe
    from mindxh.errors import MindxhError
    from mindxh.rl.grpo import GRPOTrainer
    from mindxh.train.run import TrainingError

    zeros = {"w": np.zeros(2, np.float32)}
    save_checkpoint(tmp_path, 1, zeros, zeros, {}, "name: r\n", keep_last=1)
    with pytest.raises(TrainingError, match="already holds checkpoints") as err:
        GRPOTrainer(Recipe(), None, tmp_path / "sft", tmp_path).run([])
    assert isinstance(err.value, MindxhError)


def test_grpo_refuses_prompts_without_room_for_their_completions_before_building(tmp_path,
                                                                             tiny_tokenizer):
    """A prompt longer than sft.seq_len + 1 - grpo.max_new_tokens stopped a run at its step
    (after checkpoints); every step's prompts are now drawn ahead and checked first."""
    from conftest import REPO

    from mindxh.config import load_recipe
    from mindxh.rl.grpo import GRPOTrainer
    from mindxh.tokenizer import Tokenizer
    from mindxh.train.run import TrainingError

    tok = Tokenizer.load(tiny_tokenizer)
    r = load_recipe(REPO / "recipes" / "tiny" / "x1.yaml", ["grpo.max_new_tokens=100", "grpo.steps=3"])
    with pytest.raises(TrainingError, match=r"grpo.max_new_tokens=100: the run's longest prompt "
                                            r"has \d+ tokens.*at most \d+"):
        GRPOTrainer(r, tok, tmp_path / "sft", tmp_path / "grpo").run([])
    assert not (tmp_path / "grpo" / "checkpoints").exists()


class _IdsTokenizer:
    """Ids as text; stop ids outside the vocabulary, so every row samples all its tokens."""

    eos_id = 1000
    answer_end_id = 1001
    vocab_size = 1 << 20  # any id the model has decodes

    def piece_to_id(self, piece: str) -> int:
        return 1001

    def decode(self, ids) -> str:
        return " ".join(str(i) for i in ids)


def test_loss_and_old_logprobs_score_the_tempered_distribution_that_was_sampled(tiny_policy):
    """grpo.temperature 0.7: the old log-probs, the loss's log-probs and the sampler's
    distribution are one and the same, so the first pass has ratio exactly 1."""
    from mindxh.generate.generator import Generator
    from mindxh.generate.sampling import SamplingConfig, log_probs
    from mindxh.models.llama.model import Decoder
    from mindxh.rl.objective import GRPOLoss, TokenLogProbs

    temperature = 0.7
    model = Decoder(dataclasses.replace(tiny_policy.cfg, init_std=0.3), 3)  # a peaked policy
    prompts = [[2, 11, 30], [2, 11, 30], [2, 5, 9, 14], [2, 5, 9, 14]]
    gen = Generator(model, _IdsTokenizer(), 4, 25, prompt_bucket=8)
    completions = gen.generate(prompts, SamplingConfig(max_new_tokens=10, temperature=temperature,
                                                       seed=7))
    adv = np.array([[1.0, -1.0], [0.5, -0.5]], np.float32)
    batch = build_batch(prompts, [c.ids for c in completions], adv, np.array([True, True]), 24)
    ids, tgt = ms.Tensor(batch.input_ids), ms.Tensor(batch.targets)
    m = batch.mask.astype(bool)

    old = TokenLogProbs(model, temperature)(ids, tgt).asnumpy()
    loss_cell = GRPOLoss(model, 0.2, 0.0, temperature)
    new = loss_cell.logprobs(ids, tgt).asnumpy()
    assert np.abs(new - old)[m].max() < 1e-5
    np.testing.assert_allclose(np.exp(new - old)[m], 1.0, atol=1e-5)  # the ratio at the first pass
    loss, _, clip = loss_cell(ids, tgt, ms.Tensor(batch.weights), ms.Tensor(batch.advantages),
                              ms.Tensor(old), ms.Tensor(old))
    expected = -(batch.advantages[:, None] * batch.mask).sum() / batch.mask.sum()
    assert np.isclose(float(loss.asnumpy()), expected, atol=1e-5) and float(clip.asnumpy()) == 0.0

    # ... and it is the sampler's distribution: softmax(logits / 0.7) at each sampled token
    logits = model(ids).asnumpy()
    rows, cols = np.nonzero(m)
    tokens = batch.targets[rows, cols]
    sampler = log_probs(logits[rows, cols], tokens, temperature)
    np.testing.assert_allclose(old[rows, cols], sampler, atol=1e-5)
    untempered = log_probs(logits[rows, cols], tokens, 1.0)
    assert np.abs(untempered - sampler).max() > 1e-2  # temperature 1 would be another distribution
    # `Completion.logprobs` are that temperature-1 distribution (from the cached decoder), which
    # is why GRPO does not take them as its old log-probs
    recorded = np.concatenate([c.logprobs for c in completions])
    np.testing.assert_allclose(recorded, TokenLogProbs(model)(ids, tgt).asnumpy()[m], atol=1e-4)


def test_top_p_below_one_is_refused_by_the_recipe_check():
    from mindxh.config.errors import InvalidValue
    from mindxh.config.post_training import GRPOConfig

    GRPOConfig(top_p=1.0, temperature=0.7).check()
    with pytest.raises(InvalidValue, match="would optimise a different distribution"):
        GRPOConfig(top_p=0.9).check()
