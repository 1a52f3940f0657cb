"""The world model's value function: TD-MPC2's Q(z, a) and the BMPC repository's V(z)
(`bmpc-repo`): planner bootstrap, one-step model-based TD target, training."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import start_loop, tiny_agent_config
from test_agent import make_batch

from pompc_eqx.agent import init_agent, td_targets, update
from pompc_eqx.loop import make_train_chunk
from pompc_eqx.planner import trajectory_values
from pompc_eqx.presets import PRESETS
from pompc_eqx.world_model import QFunction, VFunction, make_networks


H, B, A, OBS = 3, 8, 2, 5
DISCOUNT = 0.9


def agent_config(preset="bmpc-repo"):
    return dataclasses.replace(PRESETS[preset][1], model_size="tiny").agent_config(OBS, A, 500)


def randomise(tree, get, key):
    """Random values for a (zero-initialised) last layer, so that every head reads something."""
    return eqx.tree_at(get, tree, 0.5 * jr.normal(key, get(tree).shape))


def decode(two_hot, logits):
    return jax.vmap(two_hot.decode)(logits)


@pytest.mark.parametrize(
    "preset, kind, inputs", [("bmpc", QFunction, 16 + A), ("bmpc-repo", VFunction, 16)]
)
def test_value_function_per_preset(preset, kind, inputs):
    cfg = agent_config(preset)
    nets = eqx.filter_eval_shape(make_networks, cfg, key=jr.key(0))
    assert type(nets.value) is kind
    heads = nets.value.heads
    assert heads.members.hidden[0].linear.weight.shape[-1] == inputs  # V reads z only
    assert heads.num_members == (2 if preset == "bmpc-repo" else 5)


@pytest.mark.slow
def test_planner_bootstrap_with_v_is_the_mean_of_all_heads():
    cfg = agent_config()
    nets = make_networks(cfg, key=jr.key(1))
    nets = randomise(nets, lambda n: n.reward.out.weight, jr.key(2))
    nets = randomise(nets, lambda n: n.value.heads.members.out.weight, jr.key(3))
    z = nets.encode(jr.normal(jr.key(4), (OBS,)))
    actions = jr.uniform(jr.key(5), (16, H, A), minval=-1, maxval=1)
    g = eqx.filter_jit(trajectory_values)(nets, z, actions, DISCOUNT, key=jr.key(6))

    def one(acts):
        zt, total = z, 0.0
        for t in range(H):
            total += DISCOUNT**t * nets.reward_value(zt, acts[t])
            zt = nets.next(zt, acts[t])
        return total + DISCOUNT**H * jnp.mean(decode(nets.two_hot, nets.value.heads(zt)))

    np.testing.assert_allclose(g, jax.vmap(one)(actions), rtol=1e-4, atol=1e-4)
    assert float(jnp.std(g)) > 0


@pytest.mark.slow
def test_v_target_is_one_step_model_based_on_encoded_real_latents():
    """y_t = r^(z_t, a) + gamma (1 - term_t) mean_k Vbar_k(d(z_t, a)), z_t = h(o_t), a ~ pi(z_t),
    with the *predicted* reward (the stored reward does not enter); key layout: action, value,
    critic, kl = split(key, 4), then one key per (t, b) from the value key."""
    cfg = agent_config()
    state = init_agent(cfg, key=jr.key(7))
    state = randomise(state, lambda s: s.nets.reward.out.weight, jr.key(8))
    state = randomise(state, lambda s: s.target_value.heads.members.out.weight, jr.key(9))
    batch = make_batch(jr.key(10), a=A, obs=OBS)
    nets = state.nets
    z_next = jax.vmap(jax.vmap(nets.encode))(batch.obs[1:])
    key = jr.key(11)
    y = eqx.filter_jit(td_targets)(state, batch, z_next, cfg, key=key).value

    _, value_key, _, _ = jr.split(key, 4)
    keys = jr.split(value_key, (H, B))

    def one(o, k, term):
        z = nets.encode(o)
        a = nets.policy(z).sample(key=k)
        v = jnp.mean(decode(nets.two_hot, state.target_value.heads(nets.next(z, a))))
        return nets.reward_value(z, a) + cfg.discount * (1 - term) * v

    ref = jax.vmap(jax.vmap(one))(batch.obs[:-1], keys, batch.terminated)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    other_reward = eqx.tree_at(lambda b: b.reward, batch, batch.reward + 5.0)
    y2 = eqx.filter_jit(td_targets)(state, other_reward, z_next, cfg, key=key).value
    np.testing.assert_allclose(y2, y, rtol=1e-6)


@pytest.mark.slow
def test_bmpc_repo_update_trains_v():
    cfg = agent_config()
    state = init_agent(cfg, key=jr.key(12))
    step = eqx.filter_jit(lambda s, b, k: update(s, b, cfg=cfg, key=k))
    before = state.nets.value.heads.members.out.weight
    for i in range(3):
        state, metrics = step(state, make_batch(jr.key(20 + i), a=A, obs=OBS), jr.key(30 + i))
        assert float(metrics["lam"]) == float("inf")  # lambda = inf: the KL-only objective
        assert all(bool(jnp.isfinite(v)) for k, v in metrics.items() if k != "lam"), metrics
    assert float(metrics["value_loss"]) > 0 and "pi_q" not in metrics and "qlam_loss" not in metrics
    assert float(jnp.max(jnp.abs(state.nets.value.heads.members.out.weight - before))) > 0


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["bmpc-repo", "tdmpc2-repo"])
def test_repository_presets_train_a_chunk_on_pendulum(preset):
    agent_cfg = tiny_agent_config(preset)
    env, schedule, state = start_loop(
        agent_cfg, "jax/pendulum", num_seeds=2, steps=32, seed_steps=12
    )
    _, metrics = eqx.filter_jit(make_train_chunk(agent_cfg, schedule, env, 16))(state)
    updated = np.asarray(metrics["num_updates"][:, 0]) > 0
    regular = updated & (np.asarray(metrics["pretrain"][:, 0]) == 0)  # the burst skips pi (bmpc)
    assert regular.any()
    for name, rows in (
        ("world_model_loss", updated),
        ("value_loss", updated),
        ("pi_loss", regular),
    ):
        assert np.isfinite(np.asarray(metrics[name])[rows]).all(), name
