"""Episodic tasks: the termination head (TD-MPC2's episodic mode) ends imagined rollouts, and
an agent with it learns to avoid an early-termination trap (`jax/probe-trap`)."""

import dataclasses
import pathlib
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import start_loop, tiny_agent_config

from pompc_eqx.config import ModelConfig
from pompc_eqx.envs.registry import make_env
from pompc_eqx.experiment import run
from pompc_eqx.loop import make_evaluate, make_train_chunk, seed_keys
from pompc_eqx.planner import trajectory_values
from pompc_eqx.presets import PRESETS
from pompc_eqx.termination import NeverTerminates, TerminationHead
from pompc_eqx.world_model import make_networks


def agent_config(episodic, task="jax/probe-trap", preset="tdmpc2", **overrides):
    return tiny_agent_config(
        preset, task, num_samples=64, num_elites=8, num_pi_trajs=8, iterations=3,
        batch_size=64, episodic=episodic, **overrides,
    )  # fmt: skip


def test_termination_module_follows_episodic():
    assert isinstance(
        make_networks(agent_config(False), key=jr.key(0)).termination, NeverTerminates
    )
    nets = make_networks(agent_config(True), key=jr.key(0))
    assert isinstance(nets.termination, TerminationHead)
    # --episodic --model.no-termination-head: stored terminations cut only the TD targets
    headless = agent_config(True, model=ModelConfig(termination_head=False))
    assert headless.episodic
    assert isinstance(make_networks(headless, key=jr.key(0)).termination, NeverTerminates)
    # the head's key is folded in separately: every other network is the same as without it
    other = make_networks(agent_config(False), key=jr.key(0))
    np.testing.assert_array_equal(nets.encoder.out.linear.weight, other.encoder.out.linear.weight)


@pytest.mark.slow
def test_termination_loss_is_binary_cross_entropy():
    head = make_networks(agent_config(True), key=jr.key(1)).termination
    z = jax.nn.softmax(jr.normal(jr.key(2), (3, 4, 2, 8)), axis=-1).reshape(3, 4, 16)
    term = (jr.uniform(jr.key(3), (3, 4)) < 0.3).astype(jnp.float32)
    loss, metrics = head.loss(z, term)
    p = jax.nn.sigmoid(jax.vmap(jax.vmap(lambda zz: head.mlp(zz)[0]))(z))
    ref = -jnp.mean(term * jnp.log(p) + (1 - term) * jnp.log(1 - p))
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5)
    assert metrics["termination_loss"] is loss


@pytest.mark.slow
def test_planner_counts_nothing_after_a_predicted_end():
    """A head that predicts 'ended' everywhere: each trajectory is worth its first reward only."""
    cfg = agent_config(True)
    nets = make_networks(cfg, key=jr.key(4))
    nets = eqx.tree_at(
        lambda n: n.reward.out.weight, nets, jr.normal(jr.key(5), nets.reward.out.weight.shape)
    )
    nets = eqx.tree_at(lambda n: n.termination.mlp.out.bias, nets, jnp.full((1,), 50.0))
    z = nets.encode(jnp.ones(1))
    actions = jr.uniform(jr.key(6), (16, 3, 1), minval=-1, maxval=1)
    g = trajectory_values(nets, z, actions, 0.9, key=jr.key(7))
    np.testing.assert_allclose(
        g, jax.vmap(lambda a: nets.reward_value(z, a[0]))(actions), rtol=1e-5
    )
    never = eqx.tree_at(lambda n: n.termination, nets, NeverTerminates())
    assert not np.allclose(trajectory_values(never, z, actions, 0.9, key=jr.key(7)), g)


@pytest.mark.slow
def test_agent_with_a_termination_head_avoids_the_trap():
    cfg = agent_config(True)
    steps, seed_steps = 600, 100
    env, schedule, state = start_loop(
        cfg, "jax/probe-trap", num_seeds=2, steps=steps, seed_steps=seed_steps, reanalyze=False
    )
    state, metrics = eqx.filter_jit(make_train_chunk(cfg, schedule, env, steps))(state)
    assert np.isfinite(np.asarray(metrics["termination_loss"])[seed_steps:]).all()
    agents = state.seeds.agent
    returns = eqx.filter_jit(make_evaluate(cfg, make_env("jax/probe-trap", 2), 3))(
        agents, seed_keys(9, 2)
    )
    print("trap probe eval returns per seed and episode:", np.asarray(returns))
    # trapping at step k returns 0.5 k + 1: >= 4 means no trap before step 6 (random play ~2)
    assert np.all(np.asarray(returns) >= 4.0)

    def p_end(agent, action):
        nets = agent.nets
        z = nets.next(nets.encode(jnp.ones(1)), jnp.array([action]))
        return jax.nn.sigmoid(nets.termination.mlp(z)[0])

    p_trap = np.asarray(eqx.filter_vmap(lambda a: p_end(a, -1.0))(agents))
    p_safe = np.asarray(eqx.filter_vmap(lambda a: p_end(a, 1.0))(agents))
    print("p(end) after the trap action", p_trap, "after a safe action", p_safe)
    # the head tells the trap from a safe action (its data: the seed phase's random trap hits)
    assert np.all(p_trap > 0.4) and np.all(p_safe < 0.1) and np.all(p_trap > 5 * p_safe)


@pytest.mark.slow
def test_termination_rates_script_reports_every_seed(tmp_path):
    base = PRESETS["tdmpc2"][1]
    cfg = dataclasses.replace(
        base, task="jax/probe-trap", model_size="tiny", episodic=True, num_seeds=2, steps=48,
        seed_steps=16, eval_every=48, eval_episodes=1, chunk_steps=16, aim=False,
        progress=False, run_dir=tmp_path / "run",
        planner=dataclasses.replace(
            base.planner, num_samples=32, num_elites=4, num_pi_trajs=4, horizon=1
        ),
        buffer=dataclasses.replace(base.buffer, batch_size=16, reanalyze_batch=4),
    )  # fmt: skip
    run(cfg)
    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "termination_rates.py"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), "--skip", "0", "--samples", "2"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if line.startswith("seed ")]
    assert [line.split(":")[0] for line in lines] == ["seed 0", "seed 1"]
    # Random actions fall into probe-trap's trap within a few steps (so horizon 1, for whole
    # windows inside episodes): terminations are stored and counted.
    for line in lines:
        terminated = float(line.split("terminated ")[1].split(";")[0])
        assert 0 < terminated <= 1
        assert "imagined rollouts ended by step 1..1" in line
