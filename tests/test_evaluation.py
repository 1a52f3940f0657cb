"""Evaluation episodes (loop.make_evaluate): planner or policy-only actions, undiscounted and
discounted returns, and Q's estimate at the first state."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from pompc_eqx.agent import init_agent, policy_action
from pompc_eqx.envs.registry import make_env, task_spec
from pompc_eqx.loop import make_evaluate, seed_keys
from pompc_eqx.presets import PRESETS


def probe_setup(task):
    base = PRESETS["pompc"][1]
    cfg = dataclasses.replace(
        base,
        model_size="tiny",
        planner=dataclasses.replace(
            base.planner, num_samples=32, num_elites=4, num_pi_trajs=4, iterations=2
        ),
    )
    spec = task_spec(task)
    agent_cfg = cfg.agent_config(spec.obs_dim, spec.action_dim, spec.episode_length)
    agents = eqx.filter_vmap(lambda k: init_agent(agent_cfg, key=k))(seed_keys(0, 2))
    return agent_cfg, agents


@pytest.mark.parametrize("policy_only", [False, True])
def test_constant_probe_returns_and_discounted_returns(policy_only):
    """reward 1 for 10 steps: return 10 and sum_t gamma^t = (1 - gamma^10) / (1 - gamma)."""
    cfg, agents = probe_setup("jax/probe-constant")
    evaluate = eqx.filter_jit(
        make_evaluate(cfg, make_env("jax/probe-constant", 2), 3, policy_only=policy_only)
    )
    result = evaluate(agents, seed_keys(5, 2))
    assert result.returns.shape == result.discounted_returns.shape == (2, 3)
    np.testing.assert_allclose(result.returns, 10.0)
    g = cfg.discount
    np.testing.assert_allclose(result.discounted_returns, (1 - g**10) / (1 - g), rtol=1e-5)
    # a fresh Q reads 0 (zero last layer): the estimate is taken and is finite
    np.testing.assert_allclose(result.q_estimates, 0.0, atol=1e-5)


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
    np.testing.assert_allclose(policy_result.returns[:, 0], total, rtol=1e-5)
    assert not np.allclose(planner_result.returns, policy_result.returns)
