"""MPPI planner (pompc_eqx.planner): optimum on an analytic model, elite update, warm start,
evaluation vs training noise, the H-step return of Eq. 10 and lazy reanalyze."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from pompc_eqx.config import PlannerConfig
from pompc_eqx.math import TwoHot
from pompc_eqx.planner import elite_update, plan, reanalyze, shift_warm_start, trajectory_values
from pompc_eqx.presets import PRESETS
from pompc_eqx.world_model import Networks, ensemble_values, make_networks


DISCOUNT = 0.9


class ShiftDynamics(eqx.Module):
    """Test stand-in for the dynamics MLP: z' = z + a (1-D latent, 1-D action)."""

    def __call__(self, za):
        return za[:1] + za[1:]


class QuadraticReward(eqx.Module):
    """Test stand-in for the reward MLP: logits whose two-hot read-out is -k (z + a - c)^2.

    log(two_hot(r)) decodes back to r exactly (pinned in test_math)."""

    two_hot: TwoHot
    c: jax.Array  # arrays, so that filter_jit traces them instead of recompiling per value
    k: jax.Array

    def __call__(self, za):
        r = -self.k * (za[0] + za[1] - self.c) ** 2
        return jnp.log(jnp.maximum(self.two_hot.encode(r), 1e-30))


def analytic_nets(c: float, k: float = 10.0) -> Networks:
    """Real `Networks` (1-D latent) with dynamics and reward swapped by model surgery. The Q heads
    are the real zero-initialised ones, so the bootstrap value is exactly 0."""
    cfg = dataclasses.replace(PRESETS["pompc"][1], model_size="tiny")
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, latent_dim=1, simnorm_dim=1, mlp_dim=8, enc_dim=8)
    )
    nets = make_networks(
        cfg.agent_config(obs_dim=1, action_dim=1, episode_length=100), key=jr.key(0)
    )
    return eqx.tree_at(
        lambda n: (n.dynamics, n.reward),
        nets,
        (ShiftDynamics(), QuadraticReward(nets.two_hot, jnp.asarray(c), jnp.asarray(k))),
    )


PLANNER = PlannerConfig()  # paper defaults: 512 samples, 24 from pi, 64 elites, 6 iterations, H=3


def _plans(nets, z, warm, keys, eval_mode, cfg=PLANNER):
    return jax.vmap(
        lambda k: plan(nets, z, warm, cfg=cfg, discount=DISCOUNT, eval_mode=eval_mode, key=k)
    )(keys)


plans_jit = eqx.filter_jit(_plans)


@eqx.filter_jit
def _eval_and_train_plans(nets, z, warm, keys):
    return _plans(nets, z, warm, keys, True), _plans(nets, z, warm, keys, False)


# (z0, c): z' = z + a, r = -k (z' - c)^2 -> unique optimum a0 = c - z0, a1 = a2 = 0 (value 0).
CASES = [(0.0, 0.5), (0.2, -0.3)]


@pytest.fixture(scope="module")
def analytic_plans():
    out = {}
    for z0, c in CASES:
        nets = analytic_nets(c)
        z = jnp.array([z0])
        warm = jnp.zeros((PLANNER.horizon, 1))
        keys = jr.split(jr.key(7), 256)
        out[(z0, c)] = _eval_and_train_plans(nets, z, warm, keys)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("z0, c", CASES)
def test_plan_finds_the_analytic_optimum(analytic_plans, z0, c):
    evals, _ = analytic_plans[(z0, c)]
    a_star = c - z0
    actions = np.asarray(evals.action[:8, 0])  # a few keys
    assert np.all(np.abs(actions - a_star) < 0.1), actions
    np.testing.assert_allclose(evals.mean[:8, 0, 0], a_star, atol=0.05)
    # later steps of the mean: stay at c (a = 0); the last step has the largest spread
    np.testing.assert_allclose(evals.mean[:8, 1:, 0], 0.0, atol=0.15)
    assert np.all(np.asarray(evals.std) >= PLANNER.min_std - 1e-7)
    assert np.all(np.asarray(evals.std) <= PLANNER.max_std + 1e-7)
    # the planner has converged far below its initial std of 2
    assert float(jnp.max(evals.std[:, 0])) < 0.3


@pytest.mark.parametrize("z0, c", CASES)
def test_eval_mode_adds_no_noise_training_mode_adds_sigma0_noise(analytic_plans, z0, c):
    """Same key -> same elite; training adds std_0 * N(0, 1) on top, evaluation adds nothing.
    So (train - eval) / std_0 over many keys is standard normal."""
    evals, trains = analytic_plans[(z0, c)]
    np.testing.assert_array_equal(evals.mean, trains.mean)  # the search itself is the same
    std0 = np.asarray(trains.std[:, 0, 0])
    diff = np.asarray(trains.action[:, 0] - evals.action[:, 0])
    assert np.all(np.abs(np.asarray(trains.action)) < 1)  # no clipping in this design
    z = diff / std0
    n = len(z)
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert 0.8 < z.std() < 1.2
    # evaluation actions are elites' first actions: spread around the MPPI mean ~ std_0
    spread = np.asarray(evals.action[:, 0] - evals.mean[:, 0, 0])
    assert np.std(spread) < 2 * np.mean(std0)


def _naive_elite_update(elites, values, temperature, min_std, max_std):
    e, h, a = elites.shape
    scores = [temperature * v for v in values]
    top = max(scores)
    unnorm = [np.exp(s - top) for s in scores]
    total = sum(unnorm)
    w = np.array([u / total for u in unnorm])
    mean = np.zeros((h, a))
    for j in range(e):
        mean += w[j] * elites[j]
    var = np.zeros((h, a))
    for j in range(e):
        var += w[j] * (elites[j] - mean) ** 2
    return w, mean, np.clip(np.sqrt(var), min_std, max_std)


@pytest.mark.parametrize("temperature", [1.0, 0.35, 3.0])
def test_elite_update_matches_naive_loop(temperature, getkey):
    cfg = PlannerConfig(temperature=temperature, min_std=0.05, max_std=0.4)
    e, h, a = 64, 3, 3
    elites = np.asarray(jr.uniform(getkey(), (e, h, a), minval=-1, maxval=1), np.float64)
    elites[:, 0, 1] = 0.25  # no spread -> std clipped up to min_std
    elites[:, 1, 2] = np.where(np.arange(e) % 2, 1.0, -1.0)  # spread ~1 -> clipped down to max_std
    values = np.asarray(jr.normal(getkey(), (e,)) * 3.0, np.float64)
    w, mean, std = elite_update(
        jnp.asarray(elites, jnp.float32), jnp.asarray(values, jnp.float32), cfg
    )
    w_ref, mean_ref, std_ref = _naive_elite_update(elites, values, temperature, 0.05, 0.4)
    np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, std_ref, rtol=1e-4, atol=1e-5)
    assert std[0, 1] == pytest.approx(0.05) and std[1, 2] == pytest.approx(0.4)
    # higher value -> higher weight (code convention softmax(+temperature * G))
    order = np.argsort(values)
    assert np.all(np.diff(np.asarray(w)[order]) >= 0)


def test_shift_warm_start():
    mean = jnp.arange(12.0).reshape(3, 4) + 1
    shifted = shift_warm_start(mean)
    np.testing.assert_array_equal(shifted[:2], mean[1:])
    np.testing.assert_array_equal(shifted[2], 0.0)
    assert shifted.shape == mean.shape


@pytest.mark.slow
def test_plan_uses_the_warm_start(getkey):
    """One iteration (no policy trajectories, max_std 0.1) stays near its warm-start mean: from the
    optimum it stays there, from a bad warm start it cannot reach the optimum."""
    cfg = dataclasses.replace(PLANNER, iterations=1, max_std=0.1, num_pi_trajs=0)
    nets = analytic_nets(0.5)
    keys = jr.split(getkey(), 16)
    good = plans_jit(nets, jnp.zeros(1), jnp.array([[0.5], [0.0], [0.0]]), keys, True, cfg)
    bad = plans_jit(nets, jnp.zeros(1), jnp.array([[-0.8], [0.0], [0.0]]), keys, True, cfg)
    assert float(jnp.max(jnp.abs(good.mean[:, 0, 0] - 0.5))) < 0.05
    assert float(jnp.min(jnp.abs(bad.mean[:, 0, 0] - 0.5))) > 0.5


def test_trajectory_values_eq10_analytic(getkey):
    """G = sum_t gamma^t r_t + gamma^H Q(z_H, .) with Q = 0: on the analytic model, by hand."""
    c, k = 0.5, 10.0
    nets = analytic_nets(c, k)
    z0 = 0.1
    actions = jr.uniform(getkey(), (32, 3, 1), minval=-1, maxval=1)
    g = eqx.filter_jit(trajectory_values)(nets, jnp.array([z0]), actions, DISCOUNT, key=getkey())
    acts = np.asarray(actions[..., 0], np.float64)
    ref = np.zeros(32)
    for i in range(32):
        z = z0
        for t in range(3):
            z = z + acts[i, t]
            ref[i] += DISCOUNT**t * (-k * (z - c) ** 2)
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_trajectory_values_bootstrap_uses_online_q_pair_average(getkey):
    """The gamma^H bootstrap is the average of a random *pair* of the ordinary Q heads (not
    Q^lambda, no dropout) at a pi_s sample. Replicates the implementation's key layout."""
    cfg = dataclasses.replace(PRESETS["pompc"][1], model_size="tiny").agent_config(5, 2, 100)
    nets = make_networks(cfg, key=getkey())
    # non-zero heads so that every term matters
    nets = eqx.tree_at(
        lambda n: n.reward.out.weight, nets, jr.normal(getkey(), nets.reward.out.weight.shape)
    )
    nets = eqx.tree_at(
        lambda n: n.value.heads.members.out.weight,
        nets,
        jr.normal(getkey(), nets.value.heads.members.out.weight.shape),
    )
    z = nets.encode(jr.normal(getkey(), (5,)))
    actions = jr.uniform(getkey(), (16, 3, 2), minval=-1, maxval=1)
    key = getkey()
    g = eqx.filter_jit(trajectory_values)(nets, z, actions, DISCOUNT, key=key)
    pi_key, pair_key = jr.split(key)
    pair = jr.choice(pair_key, 5, (2,), replace=False)

    @eqx.filter_jit
    def reference(nets, actions):
        def one(acts, pi_k):  # one trajectory, written as a plain loop over t
            zt, total = z, 0.0
            for t in range(3):
                total += DISCOUNT**t * nets.reward_value(zt, acts[t])
                zt = nets.next(zt, acts[t])
            a_h = nets.policy(zt).sample(key=pi_k)
            q_all = ensemble_values(nets.value.heads, nets.two_hot, zt, a_h)
            return total + DISCOUNT**3 * q_all[pair].mean()

        return jax.vmap(one)(actions, jr.split(pi_key, 16))

    ref = reference(nets, actions)
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_reanalyze_equals_individual_plans(getkey):
    cfg = dataclasses.replace(PRESETS["pompc"][1], model_size="tiny").agent_config(5, 2, 100)
    nets = make_networks(cfg, key=getkey())
    nets = eqx.tree_at(
        lambda n: n.reward.out.weight, nets, jr.normal(getkey(), nets.reward.out.weight.shape)
    )
    planner = PlannerConfig(num_samples=48, num_pi_trajs=8, num_elites=8, iterations=2)
    zs = jax.vmap(nets.encode)(jr.normal(getkey(), (5, 5)))
    key = getkey()
    mean, std = eqx.filter_jit(reanalyze)(nets, zs, cfg=planner, discount=DISCOUNT, key=key)
    assert mean.shape == (5, 2) and std.shape == (5, 2)
    explore = nets.policy.with_log_std_bounds(*planner.reanalyze_log_std)
    one = eqx.filter_jit(
        lambda n, z, k: plan(
            n,
            z,
            jnp.zeros((3, 2)),
            cfg=planner,
            discount=DISCOUNT,
            eval_mode=False,
            key=k,
            trajectory_policy=explore,
        )
    )
    for i, k in enumerate(jr.split(key, 5)):
        p = one(nets, zs[i], k)
        # vmapped vs single: identical up to float32 re-association
        np.testing.assert_allclose(mean[i], p.mean[0], rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(std[i], p.std[0], rtol=1e-3, atol=1e-5)
    assert bool(jnp.all((std >= planner.min_std) & (std <= planner.max_std)))
    # states differ -> plans differ (not one plan broadcast to all states)
    assert not np.allclose(mean[0], mean[1])


@pytest.mark.slow
def test_reanalyze_draws_policy_trajectories_with_the_wider_log_std(getkey):
    """BMPC's exploration bounds: with every sample drawn from a policy pinned at its lowest
    log-std, the re-planned sigma_0 follows that log-std: exp(-2) with bounds (-2, 1),
    exp(-3) (the policy's own floor) with None. Same key, so the same noise is scaled by e."""
    cfg = dataclasses.replace(PRESETS["pompc"][1], model_size="tiny").agent_config(5, 2, 100)
    nets = make_networks(cfg, key=getkey())
    out = nets.policy.mlp.out
    # mean 0 and raw log-std -100 (squashed to the lower bound) in every state
    nets = eqx.tree_at(
        lambda n: (n.policy.mlp.out.weight, n.policy.mlp.out.bias),
        nets,
        (jnp.zeros_like(out.weight), jnp.concatenate([jnp.zeros(2), jnp.full(2, -100.0)])),
    )
    zs = jax.vmap(nets.encode)(jr.normal(getkey(), (6, 5)))
    key = getkey()

    def sigma0(bounds):
        planner = PlannerConfig(
            num_samples=64,
            num_pi_trajs=64,
            num_elites=64,
            iterations=1,
            min_std=1e-6,
            temperature=0.0,
            reanalyze_log_std=bounds,
        )
        return eqx.filter_jit(reanalyze)(nets, zs, cfg=planner, discount=DISCOUNT, key=key)[1]

    own, wide = sigma0(None), sigma0((-2.0, 1.0))
    # uniform weights over all 64 policy samples: sigma_0 is their spread, about exp(log-std)
    assert 0.6 * np.exp(-3.0) < float(own.mean()) < 1.4 * np.exp(-3.0)
    np.testing.assert_allclose(wide, np.e * own, rtol=1e-4)
