"""GRPO pieces: group advantages, rollout batches, the clipped objective and its update."""
import mindspore as ms
import numpy as np
import pytest

from mindxh.config.schema import ModelConfig, OptimConfig
from mindxh.data.packing import IGNORE
from mindxh.rl.rollout import build_batch, group_advantages, shuffle_rewards


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
    with pytest.raises(ValueError, match="exceed"):
        build_batch(prompts, [[1] * 9] * 4, np.zeros((2, 2)), np.ones(2, bool), length=8)


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
    adv = np.array([1.0, -1.0, 0.5, -0.5], np.float32)
    old = TokenLogProbs(tiny_policy)(ids, tgt)
    loss, kl, clip = GRPOLoss(tiny_policy, 0.2, 0.04)(ids, tgt, mask, ms.Tensor(adv), old, old)
    m = mask.asnumpy()
    expected = -(adv[:, None] * m).sum() / m.sum()  # ratio 1: pg = -A on every response token
    assert np.isclose(float(loss.asnumpy()), expected, atol=1e-5)
    assert abs(float(kl.asnumpy())) < 1e-6 and float(clip.asnumpy()) == 0.0
    # log-probs are real log-probabilities of the target ids
    logits = tiny_policy(ids).asnumpy()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    t = tgt.asnumpy()
    assert np.isclose(old.asnumpy()[0, 5], logp[0, 5, t[0, 5]], atol=1e-4)


def test_update_raises_the_probability_of_rewarded_responses(tiny_policy):
    from mindxh.models.llama.model import Decoder
    from mindxh.rl.objective import GRPOLoss, GRPOStep, TokenLogProbs
    from mindxh.train.optim import AdamW

    model = Decoder(tiny_policy.cfg, 1)
    opt = AdamW(model.trainable_params(), OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.0), 20)
    step = GRPOStep(GRPOLoss(model, 0.2, 0.0), opt)
    logprobs = TokenLogProbs(model)
    ids, tgt, mask = (ms.Tensor(a) for a in _batch())
    adv = ms.Tensor(np.array([1.0, -1.0, 1.0, -1.0], np.float32))
    before = (logprobs(ids, tgt).asnumpy() * mask.asnumpy()).sum(1)
    old = logprobs(ids, tgt)  # behaviour policy, fixed for all passes over this batch
    clip_seen = 0.0
    for _ in range(4):  # several passes on one batch: the ratio moves and clipping engages
        out = step(ids, tgt, mask, adv, old, old)
        clip_seen = max(clip_seen, float(out[2].asnumpy()))
        assert bool(out[5].asnumpy())
    after = (logprobs(ids, tgt).asnumpy() * mask.asnumpy()).sum(1)
    delta = after - before
    assert delta[0] > 0 and delta[2] > 0 and delta[1] < 0 and delta[3] < 0
    assert clip_seen > 0
