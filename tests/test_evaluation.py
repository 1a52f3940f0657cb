"""Evaluation episodes (loop.make_evaluate): planner or policy-only actions."""

import csv
import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import tiny_agent_config
from test_training import CHUNK, small

from pompc_eqx.agent import init_agent, policy_action
from pompc_eqx.envs.registry import make_env
from pompc_eqx.experiment import run
from pompc_eqx.loggers import EVAL_COLUMNS
from pompc_eqx.loop import make_evaluate, seed_keys


def probe_setup(task):
    agent_cfg = tiny_agent_config("pompc", task)
    agents = eqx.filter_vmap(lambda k: init_agent(agent_cfg, key=k))(seed_keys(0, 2))
    return agent_cfg, agents


@pytest.mark.parametrize("policy_only", [False, True])
def test_constant_probe_returns(policy_only):
    """Reward 1 for 10 steps whatever the action: every episode returns 10."""
    cfg, agents = probe_setup("jax/probe-constant")
    env = make_env("jax/probe-constant", 2)
    returns = eqx.filter_jit(make_evaluate(cfg, env, 3, policy_only=policy_only))(
        agents, seed_keys(5, 2)
    )
    assert returns.shape == (2, 3)
    np.testing.assert_allclose(returns, 10.0)


@pytest.mark.slow
def test_policy_only_evaluation_plays_the_policy_mean():
    """On the target probe (reward 1 - mean((a - obs)^2)), the policy-only return is the sum of
    the rewards of the policy's mean action at each observation; the planner's differs."""
    cfg, agents = probe_setup("jax/probe-target")
    env = make_env("jax/probe-target", 2)
    keys = seed_keys(7, 2)
    policy_result = eqx.filter_jit(make_evaluate(cfg, env, 1, policy_only=True))(agents, keys)
    planner_result = eqx.filter_jit(make_evaluate(cfg, env, 1))(agents, keys)

    # replay the policy-only episode by hand: same reset keys as make_evaluate's first episode
    episode_keys = jax.vmap(lambda k: jr.split(k, 1))(keys)[:, 0]
    reset_keys = jax.vmap(lambda k: jr.split(k, 2)[0])(episode_keys)
    state, obs = env.reset(reset_keys)
    total = jnp.zeros(2)
    for _ in range(10):
        action = eqx.filter_vmap(policy_action)(agents, obs)
        state, ts = env.step(state, action)
        total = total + ts.reward
        obs = ts.obs
    np.testing.assert_allclose(policy_result[:, 0], total, rtol=1e-5)
    assert not np.allclose(planner_result, policy_result)


@pytest.mark.slow
def test_noisy_evaluation_adds_the_planner_noise_on_the_same_start_states():
    """`noisy=True` (evaluate.py --noisy) executes the planner's action with its sigma_0 noise;
    with the same keys eval mode is reproducible and differs from it."""
    cfg, agents = probe_setup("jax/probe-target")
    env = make_env("jax/probe-target", 2)
    keys = seed_keys(7, 2)
    eval_mode = eqx.filter_jit(make_evaluate(cfg, env, 2))
    noisy = eqx.filter_jit(make_evaluate(cfg, env, 2, noisy=True))(agents, keys)
    first, again = eval_mode(agents, keys), eval_mode(agents, keys)
    np.testing.assert_array_equal(first, again)
    assert noisy.shape == first.shape == (2, 2)
    assert np.abs(np.asarray(noisy) - np.asarray(first)).min() > 1e-4


@pytest.mark.slow
def test_run_evaluates_at_step_0_and_the_policy_alone_into_its_own_file(tmp_path):
    cfg = small(num_seeds=2, eval_episodes=2, eval_at_start=True, eval_policy=True)
    run_dir = run(dataclasses.replace(cfg, run_dir=tmp_path / "run"))
    planner, policy = (_rows(run_dir / name) for name in ("eval.csv", "eval_policy.csv"))
    for rows in (planner, policy):
        assert tuple(rows[0]) == EVAL_COLUMNS, "eval_policy.csv has eval.csv's columns"
        steps = sorted({int(r["agent_step"]) for r in rows})
        assert steps == [0, CHUNK, 2 * CHUNK]
        assert len(rows) == len(steps) * 2 * 2  # steps x seeds x episodes
    returns = lambda rows: [float(r["return"]) for r in rows]
    assert returns(planner) != returns(policy), "the policy alone is evaluated, not the planner"
    # Without the options (the default of the paper's presets) neither happens.
    plain = run(dataclasses.replace(small(num_seeds=1), run_dir=tmp_path / "plain"))
    assert {r["agent_step"] for r in _rows(plain / "eval.csv")} == {str(CHUNK), str(2 * CHUNK)}
    assert not (plain / "eval_policy.csv").exists()


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))
