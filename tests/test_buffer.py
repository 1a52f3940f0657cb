"""Replay buffer: episode-respecting sampling and reanalyze write-back, against naive Python."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from pompc_eqx.agent import init_agent
from pompc_eqx.buffer import ReplayBuffer, Transition
from pompc_eqx.loop import Schedule, learn
from pompc_eqx.presets import PRESETS


H = 3


class NaiveBuffer:
    """A list-of-rows reference: rows (episode id, position, obs value), ring of `capacity`."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.rows = [None] * capacity
        self.pointer = 0

    def write(self, row):
        self.rows[self.pointer] = row
        self.pointer = (self.pointer + 1) % self.capacity

    def valid_starts(self):
        valid = set()
        for s in range(self.capacity):
            window = [self.rows[(s + t) % self.capacity] for t in range(H + 1)]
            if any(r is None for r in window):
                continue
            episode, pos = window[0][0], window[0][1]
            # Consecutive positions of one episode, written in order.
            if all(r[0] == episode and r[1] == pos + t for t, r in enumerate(window)):
                valid.add(s)
        return valid


def _fill(lengths, capacity, terminate_last=False):
    """Write episodes of the given lengths into both buffers; obs encodes (episode, position)."""
    buf = ReplayBuffer.empty(capacity, obs_dim=2, action_dim=1, horizon=H)
    ref = NaiveBuffer(capacity)
    add = eqx.filter_jit(lambda b, *xs: b.add(Transition(*xs), placeholder_std=2.0))
    for episode, length in enumerate(lengths):
        for pos in range(length):
            done = pos == length - 1
            obs = jnp.array([episode, pos], jnp.float32)
            final = jnp.array([episode, pos + 1], jnp.float32)
            buf = add(
                buf,
                obs,
                jnp.array([0.1 * pos]),
                jnp.array(float(pos)),
                jnp.array(done and terminate_last),
                jnp.array([0.5]),
                jnp.array([0.3]),
                jnp.array(pos),
                jnp.array(done),
                final,
            )
            ref.write((episode, pos, float(pos)))
            if done:
                ref.write((episode, pos + 1, 0.0))
    return buf, ref


@pytest.mark.parametrize("capacity", [40, 23])
def test_valid_starts_match_naive_reference(capacity):
    # Varying episode lengths (early terminations) and, at capacity 23, several wrap-arounds.
    buf, ref = _fill([7, 4, 12, 3, 9, 5], capacity)
    assert set(np.flatnonzero(np.asarray(buf.valid_start)).tolist()) == ref.valid_starts()


def test_sampled_sequences_never_cross_episodes():
    buf, ref = _fill([7, 4, 12, 3, 9, 5], 23)
    starts = buf.sample_starts(512, key=jr.key(0))
    batch = buf.gather(starts)
    obs = np.asarray(batch.obs)  # (H+1, B, 2): (episode, position)
    assert np.all(obs[:, :, 0] == obs[0:1, :, 0]), "a sequence crosses an episode boundary"
    assert np.all(np.diff(obs[:, :, 1], axis=0) == 1), "positions are not consecutive"
    assert set(np.asarray(starts).tolist()) <= ref.valid_starts()
    # Uniform over valid starts: every valid start is drawn at least once in 512 draws.
    assert set(np.asarray(starts).tolist()) == ref.valid_starts()
    # Actions/rewards of rows s..s+H-1 belong to the transitions starting at o_s..o_{s+H-1}.
    np.testing.assert_allclose(np.asarray(batch.reward), obs[:-1, :, 1])


def test_sampling_is_uniform_over_valid_starts():
    valid = np.asarray(jr.bernoulli(jr.key(3), 0.3, (1000,)))
    buf = eqx.tree_at(
        lambda b: b.valid_start, ReplayBuffer.empty(1000, 2, 1, H), jnp.asarray(valid)
    )
    starts = np.asarray(buf.sample_starts(200_000, key=jr.key(4)))
    assert valid[starts].all()
    counts = np.bincount(starts, minlength=1000)[valid]
    expected = starts.size / valid.sum()
    # Every valid row within 5 binomial standard deviations of its expected count.
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_sampling_never_returns_a_row_of_zero_probability():
    # The replay layout and key under which jr.choice(p=...) drew the empty row 20240 (its
    # float32 cumulative sum rounds upward inside the run of invalid rows): 39 finished
    # episodes of 500 steps + final row, and 449 valid starts of the current one.
    capacity, rows = 50_102, np.arange(50_102)
    valid = ((rows % 501 <= 497) & (rows < 19_539)) | ((rows >= 19_539) & (rows <= 19_987))
    buf = eqx.tree_at(
        lambda b: b.valid_start, ReplayBuffer.empty(capacity, 5, 1, H), jnp.asarray(valid)
    )
    key = jr.wrap_key_data(jnp.array([4287256790, 2684500112], jnp.uint32))
    for k in [key, *jr.split(key, 20)]:
        assert valid[np.asarray(buf.sample_starts(256, key=k))].all()


def test_final_observation_row_and_terminal_flag():
    buf, _ = _fill([5], 10, terminate_last=True)
    obs = np.asarray(buf.obs)
    assert obs[5].tolist() == [0, 5], (
        "the episode's final observation is stored after its last step"
    )
    assert np.asarray(buf.terminated)[4] and not np.asarray(buf.terminated)[:4].any()
    np.testing.assert_allclose(np.asarray(buf.plan_std)[5], [2.0])  # placeholder statistics
    assert int(buf.pointer) == 6


def test_write_plans_targets_rows_start_plus_t():
    buf, _ = _fill([12], 16)
    starts = jnp.array([2, 14])  # the second wraps around the ring
    mean = jnp.arange(H * 2, dtype=jnp.float32).reshape(H, 2, 1)
    std = mean + 100
    new = buf.write_plans(starts, mean, std)
    expected_mean = np.asarray(buf.plan_mean).copy()
    for j, s in enumerate([2, 14]):
        for t in range(H):
            expected_mean[(s + t) % 16] = np.asarray(mean[t, j])
    np.testing.assert_array_equal(np.asarray(new.plan_mean), expected_mean)
    changed = np.flatnonzero(np.any(np.asarray(new.plan_std) != np.asarray(buf.plan_std), axis=1))
    assert sorted(changed.tolist()) == sorted({(s + t) % 16 for s in (2, 14) for t in range(H)})


@pytest.mark.slow
def test_learn_reanalyze_writes_fresh_plans_into_sampled_rows():
    base = PRESETS["pompc"][1]
    cfg = dataclasses.replace(
        base,
        model_size="tiny",
        planner=dataclasses.replace(
            base.planner, num_samples=16, num_elites=4, num_pi_trajs=4, iterations=1
        ),
        buffer=dataclasses.replace(base.buffer, batch_size=8, reanalyze_batch=3),
    ).agent_config(obs_dim=2, action_dim=1, episode_length=50)
    schedule = Schedule(seed_steps=10, capacity=64, reanalyze_interval=10, reanalyze_batch=3)
    buf, _ = _fill([30, 20], 64)
    agent = init_agent(cfg, key=jr.key(0))
    key = jr.key(1)
    step = eqx.filter_jit(
        lambda a, b, k, r: learn(a, b, k, jnp.array(False), r, cfg=cfg, schedule=schedule)
    )
    _, untouched, _ = step(agent, buf, key, jnp.array(False))
    _, fresh, _ = step(agent, buf, key, jnp.array(True))
    np.testing.assert_array_equal(np.asarray(untouched.plan_mean), np.asarray(buf.plan_mean))
    starts = np.asarray(buf.sample_starts(cfg.batch_size, key=jr.split(key, 3)[0]))
    rows = {(s + t) % 64 for s in starts[:3] for t in range(H)}
    changed = set(
        np.flatnonzero(
            np.any(np.asarray(fresh.plan_std) != np.asarray(buf.plan_std), axis=1)
        ).tolist()
    )
    assert changed == rows
    std = np.asarray(fresh.plan_std)[sorted(rows)]
    assert np.all((std >= cfg.planner.min_std) & (std <= cfg.planner.max_std))


def test_buffer_rejects_tiny_capacity():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer.empty(3, 2, 1, horizon=H)


def test_gather_shapes():
    buf, _ = _fill([10], 20)
    batch = buf.gather(jnp.array([0, 1, 2]))
    assert batch.obs.shape == (H + 1, 3, 2) and batch.action.shape == (H, 3, 1)
    assert batch.plan_mean.shape == (H + 1, 3, 1)
    assert jax.tree.leaves(batch)
