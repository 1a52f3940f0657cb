"""docs/extending.md's worked examples, run: a new prior (one file, registered by name) trained
end to end on jax/pendulum, and a new policy objective (one file) plugged into the agent."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from examples.kl_with_q import KLWithQ
from examples.state_independent_prior import StateIndependentPrior
from helpers import start_loop, tiny_agent_config
from test_agent import make_batch

from pompc_eqx.agent import init_agent, update
from pompc_eqx.distributions import kl_divergence
from pompc_eqx.loop import make_train_chunk
from pompc_eqx.losses import planner_gaussian
from pompc_eqx.math import RunningScale
from pompc_eqx.objectives import MaxQ
from pompc_eqx.priors import PRIORS, make_prior


@pytest.mark.slow
def test_new_prior_registered_by_name_trains_end_to_end_on_pendulum():
    assert "state-independent" in PRIORS  # registered by importing its file
    cfg = tiny_agent_config("pompc", prior="state-independent")
    steps, chunk_steps, seed_steps = 300, 100, 50
    env, schedule, state = start_loop(
        cfg, "jax/pendulum", num_seeds=2, steps=steps, seed_steps=seed_steps
    )
    prior0 = state.seeds.agent.objective.prior
    assert isinstance(prior0, StateIndependentPrior)
    chunk = eqx.filter_jit(make_train_chunk(cfg, schedule, env, chunk_steps))
    windows = []
    for _ in range(steps // chunk_steps):
        state, metrics = chunk(state)
        windows.append(jax.device_get(metrics))
    last = windows[-1]
    for name in ("prior_loss", "prior_kl", "kl_mean", "pi_loss", "qlam_loss"):
        assert np.isfinite(last[name]).all(), name
    prior = state.seeds.agent.objective.prior
    assert float(jnp.max(jnp.abs(prior.mean - prior0.mean))) > 1e-3  # it was fitted
    # the fit moved it toward the planner Gaussians stored since learning began: its reverse KL
    # to them is lower than the initial prior's
    buffer = jax.tree.map(lambda x: x[0], state.seeds.buffer)
    rows = slice(seed_steps, steps)
    stored = jax.vmap(planner_gaussian)(buffer.plan_mean[rows], buffer.plan_std[rows])

    def mean_kl(p):
        fitted = jax.tree.map(lambda x: x[0], p)
        return float(
            jnp.mean(
                jax.vmap(
                    lambda q: kl_divergence(
                        fitted(None, None, None), q, reduction="sum", key=jr.key(0)
                    )
                )(stored)
            )
        )

    assert mean_kl(prior) < 0.8 * mean_kl(prior0)


def kl_with_q(cfg, *, critic_key, prior_key):
    one = RunningScale.init
    return KLWithQ(make_prior(cfg, key=prior_key), one(), one(), lam=1.0)


@pytest.mark.slow
def test_new_objective_plugs_into_the_agent_and_trains():
    cfg = tiny_agent_config(
        "pompc",
    )
    state = init_agent(cfg, key=jr.key(0), make_objective=kl_with_q)
    policy0 = state.nets.policy
    assert state.objective.critic() is None  # no Q^lambda: the world model trains Q only
    step = eqx.filter_jit(lambda s, b, k: update(s, b, cfg=cfg, key=k))
    for i in range(20):
        state, metrics = step(state, make_batch(jr.key(i), a=1, obs=3), jr.key(100 + i))
        assert all(bool(jnp.isfinite(v)) for v in metrics.values()), metrics
    assert "qlam_loss" not in metrics and {"kl_mean", "pi_q", "prior_loss"} <= set(metrics)
    moved = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))),
        eqx.filter(policy0, eqx.is_array),
        eqx.filter(state.nets.policy, eqx.is_array),
    )
    assert max(jax.tree.leaves(moved)) > 1e-4  # the policy was trained by the new loss


def test_new_objective_at_lambda_zero_is_tdmpc2s_loss():
    """KLWithQ with lambda = 0 reduces to MaxQ (same draws, same Q, same scale update)."""
    cfg = tiny_agent_config(
        "pompc",
    )
    state = init_agent(cfg, key=jr.key(1), make_objective=kl_with_q)
    zero = dataclasses.replace(state.objective, lam=0.0)
    batch = make_batch(jr.key(2), a=1, obs=3)
    zs = jax.vmap(jax.vmap(state.nets.encode))(batch.obs)[:3]
    key = jr.key(3)
    a, (_, ma) = zero.policy_loss(state.nets.policy, state.nets, zs, batch, cfg.loss, key=key)
    b, (_, mb) = MaxQ(RunningScale.init()).policy_loss(
        state.nets.policy, state.nets, zs, batch, cfg.loss, key=key
    )
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    assert float(ma["kl_mean"]) > 0  # the KL term was there, weighted by 0
