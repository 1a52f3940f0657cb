"""The PO-MPC update (pompc_eqx.agent, objectives, losses): the lambda special cases of Eq. 18, the TD targets of
Eqs. 15/17, TD-MPC2's world-model loss, compile-once and shape errors.

Every reference below is written in this file from the formulas (anchors-reference §2, §4 and
the paper's Eqs. 12-18): Gaussian KLs, the two-hot read-out, cross-entropies, percentiles and
the rho^t weights are recomputed here. Where the implementation draws random numbers (reparam-
eterised actions, the random pair of Q heads, dropout masks), the reference replicates its
documented key layout (`jr.split(key, 4)` then one key per (t, b)) so that both see the same
samples.
"""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest

from pompc_eqx.agent import ModelParams, Targets, init_agent, model_loss, td_targets, update
from pompc_eqx.buffer import Batch
from pompc_eqx.distributions import ClippedGaussian
from pompc_eqx.lam import DualLambda, FixedLambda
from pompc_eqx.math import RunningScale
from pompc_eqx.presets import PRESETS


H, B, A, OBS = 3, 8, 2, 5
LOG_2PI = math.log(2 * math.pi)


def agent_config(preset, **model):
    cfg = dataclasses.replace(PRESETS[preset][1], model_size="tiny")
    if model:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model))
    return cfg.agent_config(obs_dim=OBS, action_dim=A, episode_length=500)


def perturb_heads(state, key):
    """Random last layers for R, Q, Q^lambda and both targets (zero at init -> would read 0)."""
    keys = iter(jr.split(key, 8))

    def rnd(x):
        return 0.5 * jr.normal(next(keys), x.shape)

    nets = state.nets
    state = eqx.tree_at(lambda s: s.nets.reward.out.weight, state, rnd(nets.reward.out.weight))
    state = eqx.tree_at(
        lambda s: s.nets.value.heads.members.out.weight,
        state,
        rnd(nets.value.heads.members.out.weight),
    )
    state = eqx.tree_at(
        lambda s: s.target_value.heads.members.out.weight,
        state,
        rnd(state.target_value.heads.members.out.weight),
    )
    if hasattr(state.objective, "qlam"):
        obj = state.objective
        state = eqx.tree_at(
            lambda s: s.objective.qlam.members.out.weight, state, rnd(obj.qlam.members.out.weight)
        )
        state = eqx.tree_at(
            lambda s: s.objective.target_qlam.members.out.weight,
            state,
            rnd(obj.target_qlam.members.out.weight),
        )
    return state


def with_scales(state, q=1.0, kl=1.0, prior=1.0):
    """Running scales away from their initial 1, so that the EMA and the division are visible."""
    scale = lambda v: RunningScale(value=jnp.asarray(v, jnp.float32))
    obj = state.objective
    if hasattr(obj, "scale_q"):
        obj = eqx.tree_at(lambda o: o.scale_q, obj, scale(q))
    if hasattr(obj, "scale_kl"):
        obj = eqx.tree_at(lambda o: o.scale_kl, obj, scale(kl))
    if hasattr(obj, "prior") and hasattr(obj.prior, "scale"):
        obj = eqx.tree_at(lambda o: o.prior.scale, obj, scale(prior))
    return eqx.tree_at(lambda s: s.objective, state, obj)


def make_batch(key, h=H, b=B, a=A, obs=OBS):
    k = jr.split(key, 6)
    return Batch(
        obs=jr.normal(k[0], (h + 1, b, obs)),
        action=jr.uniform(k[1], (h, b, a), minval=-1, maxval=1),
        reward=2.0 * jr.normal(k[2], (h, b)),
        terminated=(jr.uniform(k[3], (h, b)) < 0.25).astype(jnp.float32),
        plan_mean=jr.uniform(k[4], (h + 1, b, a), minval=-0.8, maxval=0.8),
        plan_std=jr.uniform(k[5], (h + 1, b, a), minval=0.1, maxval=0.8),
    )


@pytest.fixture(scope="module")
def states():
    out = {}
    for i, preset in enumerate(("tdmpc2", "bmpc", "pompc")):
        cfg = agent_config(preset)
        state = init_agent(cfg, key=jr.key(10 + i))
        state = perturb_heads(state, jr.key(20 + i))
        state = with_scales(state, q=2.0, kl=1.5, prior=1.3)
        out[preset] = (cfg, state)
    return out


@pytest.fixture(scope="module")
def batch():
    return make_batch(jr.key(3))


def latents(state, obs):
    return jax.vmap(jax.vmap(state.nets.encode))(obs)


# --------------------------------------------------------------------------- reference pieces


def decode(logits, vmin=-10.0, vmax=10.0):
    """symexp(E_softmax[bin]) with the bins in symlog space (TD-MPC2 two_hot_inv)."""
    bins = jnp.linspace(vmin, vmax, logits.shape[-1])
    s = jax.nn.softmax(logits, axis=-1) @ bins
    return jnp.sign(s) * (jnp.exp(jnp.abs(s)) - 1)


def two_hot(y, num_bins=101, vmin=-10.0, vmax=10.0):
    s = jnp.clip(jnp.sign(y) * jnp.log1p(jnp.abs(y)), vmin, vmax)
    u = (s - vmin) / ((vmax - vmin) / (num_bins - 1))
    lo = jnp.floor(u)
    idx = jnp.arange(num_bins)
    return jnp.where(idx == lo, 1 - (u - lo), 0.0) + jnp.where(idx == lo + 1, u - lo, 0.0)


def soft_ce(logits, y):
    return -jnp.sum(two_hot(y) * jax.nn.log_softmax(logits))


def gauss_kl(m1, s1, m2, s2):
    """KL(N(m1, s1) || N(m2, s2)) summed over the last axis."""
    return jnp.sum(jnp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5, axis=-1)


def np_scale(old, x, tau):
    p5, p95 = np.percentile(np.asarray(x, np.float64), [5.0, 95.0])
    return old + tau * (max(p95 - p5, 1.0) - old)


def _dist_params(net, z, cfg):
    """(loc, scale, log_std) of a policy/prior network at one latent, from the family's rules:
    log std squashed into [log_std_min, log_std_max]; loc = tanh(mean) for the clipped family."""
    mean, raw = jnp.split(net.mlp(z), 2)
    lo, hi = cfg.policy.log_std_min, cfg.policy.log_std_max
    log_std = lo + 0.5 * (hi - lo) * (jnp.tanh(raw) + 1)
    loc = mean if cfg.policy.distribution == "tanh-gaussian" else jnp.tanh(mean)
    return loc, jnp.exp(log_std), log_std


def policy_components(policy, state, zs, batch, cfg, key, *, critic, prior):
    """Per-(t, b) scaled entropy, Q and KL of the policy loss, from the key layout of
    `losses.draw_policy`: sample, pair, dropout, kl = split(key, 4), then one key per (t, b)."""
    n, b = zs.shape[:2]
    sample_key, pair_key, dropout_key, _ = jr.split(key, 4)
    pair = None if critic is None else jr.choice(pair_key, critic.num_members, (2,), replace=False)

    def one(z, sample_k, dropout_k, plan_m, plan_s):
        loc, scale, log_std = _dist_params(policy, z, cfg)
        eps = jr.normal(sample_k, (A,))
        u = loc + scale * eps
        action = jnp.tanh(u) if cfg.policy.distribution == "tanh-gaussian" else jnp.clip(u, -1, 1)
        out = {"se": -A * jnp.sum(-0.5 * eps**2 - log_std - 0.5 * LOG_2PI)}
        if critic is not None:
            logits = critic.subset(pair)(jnp.concatenate([z, action]), key=dropout_k)
            out["q"] = jnp.mean(decode(logits))
        if prior == "replay":
            out["kl"] = gauss_kl(loc, scale, plan_m, plan_s)
        elif prior == "learned":
            p_loc, p_scale, _ = _dist_params(state.objective.prior.net, z, cfg)
            out["kl"] = gauss_kl(loc, scale, p_loc, p_scale)
        return out

    return jax.vmap(jax.vmap(one))(
        zs,
        jr.split(sample_key, (n, b)),
        jr.split(dropout_key, (n, b)),
        batch.plan_mean[:n],
        batch.plan_std[:n],
    )


def weights(n, rho):
    return np.array([rho**t / n for t in range(n)])


def reference_policy_loss(comps, s_q, s_kl, lam, cfg, n):
    """sum_t rho^t/n mean_B[-alpha se - q/S_Q + lam KL/S_KL] (terms present as configured)."""
    w = jnp.asarray(weights(n, cfg.loss.rho), jnp.float32)
    per = -cfg.loss.entropy_coef * comps["se"]
    if "q" in comps:
        per = per - comps["q"] / s_q
    if "kl" in comps:
        per = per + lam * comps["kl"] / s_kl
    return jnp.sum(w * jnp.mean(per, axis=1))


def policy_loss(policy, state, zs, batch, cfg, key):
    return state.objective.policy_loss(policy, state.nets, zs, batch, cfg.loss, key=key)


POLICY_VALUE_AND_GRAD = eqx.filter_jit(eqx.filter_value_and_grad(policy_loss, has_aux=True))


def scale_value(objective, name):
    """S_Q / S_KL of an objective, or None where it has no such term."""
    return float(getattr(objective, name).value) if hasattr(objective, name) else None


def check_policy_loss(cfg, state, zs, batch, key, *, critic, prior, lam):
    n = zs.shape[0]
    (loss, (objective, metrics)), grads = POLICY_VALUE_AND_GRAD(
        state.nets.policy, state, zs, batch, cfg, key
    )

    comps_fn = eqx.filter_jit(
        lambda pol: policy_components(pol, state, zs, batch, cfg, key, critic=critic, prior=prior)
    )
    comps = comps_fn(state.nets.policy)
    old_q, old_kl = (
        scale_value(state.objective, "scale_q"),
        scale_value(state.objective, "scale_kl"),
    )
    s_q = np_scale(old_q, comps["q"][0], cfg.loss.scale_tau) if "q" in comps else None
    s_kl = np_scale(old_kl, comps["kl"][0], cfg.loss.scale_tau) if "kl" in comps else None

    def ref(pol):
        return reference_policy_loss(comps_fn(pol), s_q, s_kl, lam, cfg, n)

    ref_loss, ref_grads = eqx.filter_jit(eqx.filter_value_and_grad(ref))(state.nets.policy)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-4, atol=1e-6)
    flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(ref_grads)
    assert len(flat) == len(flat_ref) > 0
    gmax = max(float(jnp.max(jnp.abs(g))) for g in flat_ref)
    assert gmax > 0
    for g, r in zip(flat, flat_ref):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * gmax)
    for name, expected in (("scale_q", s_q), ("scale_kl", s_kl)):
        if expected is not None:
            np.testing.assert_allclose(scale_value(objective, name), expected, rtol=1e-5)
        else:  # the objective has no such term, so no such scale
            assert scale_value(objective, name) is None
    return loss, comps, s_kl, metrics


# --------------------------------------------------------------------------- lambda special cases


def test_num_policy_latents_per_preset():
    assert agent_config("tdmpc2").num_policy_latents == H + 1  # TD-MPC2: z_0..z_H
    assert agent_config("bmpc").num_policy_latents == H  # BMPC / Eq. 18: z_0..z_{H-1}
    assert agent_config("pompc").num_policy_latents == H


@pytest.mark.slow
def test_lambda_zero_is_tdmpc2_policy_loss(states, batch, getkey):
    """lambda = 0 (`tdmpc2` preset): (1/(H+1)) sum_{t=0}^{H} rho^t mean_B[-alpha se_t - q_t/S_Q],
    q_t the mean of one random pair of online Q heads with dropout on, S_Q updated from q_0."""
    cfg, state = states["tdmpc2"]
    assert not hasattr(state.objective, "qlam") and not hasattr(state.objective, "prior")
    zs = latents(state, batch.obs)  # H+1 latents
    loss, comps, _, metrics = check_policy_loss(
        cfg, state, zs, batch, getkey(), critic=state.nets.value.heads, prior=None, lam=0.0
    )
    assert "kl_mean" not in metrics
    # non-trivial: the Q term dominates and its running-scale spread exceeds the clamp
    p5, p95 = np.percentile(np.asarray(comps["q"][0]), [5, 95])
    assert p95 - p5 > 1.0


@pytest.mark.slow
def test_lambda_inf_is_bmpc_kl_only_loss(states, batch, getkey):
    """lambda = inf (`bmpc`): (1/H) sum_t rho^t mean_B[KL_t/S_KL - alpha se_t], KL to the stored
    planner Gaussians N(plan_mean[t], plan_std[t]) at rows t = 0..H-1; no Q term."""
    cfg, state = states["bmpc"]
    zs = latents(state, batch.obs)[:H]
    _, comps, _, metrics = check_policy_loss(
        cfg, state, zs, batch, getkey(), critic=None, prior="replay", lam=1.0
    )
    assert "pi_q" not in metrics
    np.testing.assert_allclose(float(metrics["kl_mean"]), float(jnp.mean(comps["kl"])), rtol=1e-5)
    # the row offset matters: using rows 1..H instead would give a different loss
    shifted = eqx.tree_at(
        lambda b: (b.plan_mean, b.plan_std),
        batch,
        (jnp.roll(batch.plan_mean, -1, 0), jnp.roll(batch.plan_std, -1, 0)),
    )
    key = getkey()
    f = eqx.filter_jit(policy_loss)
    l0 = f(state.nets.policy, state, zs, batch, cfg, key)[0]
    l1 = f(state.nets.policy, state, zs, shifted, cfg, key)[0]
    assert abs(float(l0) - float(l1)) > 1e-3


@pytest.mark.slow
def test_intermediate_lambda_loss_and_linearity_in_lambda(states, batch, getkey):
    """lambda = 1 (`pompc`): lam KL(pi_s || pi_p)/S_KL - Q^lambda/S_Q - alpha se, with pi_p the
    learned prior network and the critic the Q^lambda ensemble (not Q). And the loss is linear
    in lambda with slope sum_t rho^t/H mean_B KL_t / S_KL (same key, other lambdas)."""
    cfg, state = states["pompc"]
    # lambda as an array (DualLambda's log-lambda) so that other values reuse the compiled loss
    state = eqx.tree_at(lambda s: s.objective.lam, state, DualLambda(1.0, kl_target=1.0, lr=1e-3))
    zs = latents(state, batch.obs)[:H]
    key = getkey()
    loss1, comps, s_kl, _ = check_policy_loss(
        cfg, state, zs, batch, key, critic=state.objective.qlam, prior="learned", lam=1.0
    )
    slope = (
        float(np.sum(weights(H, cfg.loss.rho) * np.mean(np.asarray(comps["kl"]), axis=1))) / s_kl
    )
    assert slope > 1e-3
    for lam in (0.25, 9.0):
        other = eqx.tree_at(
            lambda s: s.objective.lam, state, DualLambda(lam, kl_target=1.0, lr=1e-3)
        )
        (loss, _), _ = POLICY_VALUE_AND_GRAD(other.nets.policy, other, zs, batch, cfg, key)
        np.testing.assert_allclose(
            float(loss) - float(loss1), (lam - 1.0) * slope, rtol=1e-4, atol=1e-6
        )


# --------------------------------------------------------------------------- TD targets


@pytest.mark.slow
def test_td_targets_eq15_and_eq17(states, batch, getkey):
    """y = r + gamma (1 - term) min_pair Qbar(z', a~) and
    y^lam = r + gamma (1 - term) (min_pair Qbar^lam(z', a~) - lam KL(pi_s||pi_p)(z') / max(1, S)),
    z' = h(o_{t+1}), a~ ~ pi_s(z'); key layout: act, pair, lam_pair, kl = split(key, 4)."""
    cfg, state = states["pompc"]
    state = eqx.tree_at(lambda s: s.objective.lam, state, FixedLambda(2.5))
    z_next = latents(state, batch.obs[1:])
    key = getkey()
    targets = eqx.filter_jit(td_targets)(state, batch, z_next, cfg, key=key)
    td, td_lam = targets.value, targets.critic
    obj = state.objective

    @eqx.filter_jit
    def reference(state, batch, z_next):
        act_key, pair_key, lam_pair_key, _ = jr.split(key, 4)
        pair = jr.choice(pair_key, 5, (2,), replace=False)
        lam_pair = jr.choice(lam_pair_key, 5, (2,), replace=False)

        def one(z, k, r, term):
            loc, scale, _ = _dist_params(state.nets.policy, z, cfg)
            a = jnp.clip(loc + scale * jr.normal(k, (A,)), -1, 1)
            za = jnp.concatenate([z, a])
            q = decode(state.target_value.heads(za))  # all heads, no dropout
            qlam = decode(obj.target_qlam(za))
            p_loc, p_scale, _ = _dist_params(obj.prior.net, z, cfg)
            kl = gauss_kl(loc, scale, p_loc, p_scale)
            boot = cfg.discount * (1 - term)
            s_kl = jnp.maximum(1.0, obj.scale_kl.value)
            return r + boot * jnp.min(q[pair]), r + boot * (
                jnp.min(qlam[lam_pair]) - 2.5 * kl / s_kl
            )

        return jax.vmap(jax.vmap(one))(
            z_next, jr.split(act_key, (H, B)), batch.reward, batch.terminated
        )

    y, y_lam = reference(state, batch, z_next)
    np.testing.assert_allclose(td, y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(td_lam, y_lam, rtol=1e-4, atol=1e-4)
    # the KL term is not negligible and terminations cut the bootstrap
    assert float(jnp.max(jnp.abs(td - td_lam))) > 0.1
    done = np.asarray(batch.terminated) > 0
    assert done.any()
    np.testing.assert_allclose(np.asarray(td)[done], np.asarray(batch.reward)[done], rtol=1e-6)


def test_td_target_without_qlam(states, batch, getkey):
    for preset in ("tdmpc2", "bmpc"):
        cfg, state = states[preset]
        z_next = jnp.zeros((H, B, state.nets.encoder.out.linear.weight.shape[0]))
        targets = eqx.filter_eval_shape(td_targets, state, batch, z_next, cfg, key=getkey())
        assert targets.critic is None and targets.value.shape == (H, B)


# --------------------------------------------------------------------------- world-model loss


@pytest.fixture(scope="module")
def no_dropout_state():
    cfg = agent_config("pompc", dropout=0.0)
    state = init_agent(cfg, key=jr.key(30))
    state = perturb_heads(state, jr.key(31))
    return cfg, state


def test_world_model_loss_matches_naive_loop(no_dropout_state, batch, getkey):
    """20 L_c + 0.1 L_r + 0.1 L_v + 0.1 L_qlam with
    L_c = (1/H) sum_t rho^t mean_{B,L}(z_{t+1} - z'_t)^2, L_r = (1/H) sum_t rho^t mean_B CE(R),
    L_v = (1/(H N_q)) sum_t rho^t sum_k mean_B CE(Q_k); latents from the rollout
    z_{t+1} = d(z_t, a_t)."""
    cfg, state = no_dropout_state
    k1, k2, k3 = jr.split(getkey(), 3)
    z_next = latents(state, batch.obs[1:])
    td = 3.0 * jr.normal(k1, (H, B))
    td_lam = 3.0 * jr.normal(k2, (H, B))
    part = state.model_params()
    assert isinstance(part, ModelParams)
    total, (zs, metrics) = eqx.filter_jit(model_loss)(
        part, state, batch, z_next, Targets(td, td_lam), cfg, k3
    )

    rho = cfg.loss.rho

    def naive(part):
        enc, dyn, rew, q, qlam = (
            part.encoder,
            part.dynamics,
            part.reward,
            part.value.heads,
            part.critic,
        )
        ce_heads = jax.vmap(jax.vmap(soft_ce, in_axes=(0, None)))  # over batch, then heads
        lc = lr = lv = lq = 0.0
        z = jax.vmap(enc)(batch.obs[0])
        zs = [z]
        for t in range(H):
            za = jnp.concatenate([z, batch.action[t]], axis=-1)
            lr += rho**t * jnp.mean(jax.vmap(lambda x, y: soft_ce(rew(x), y))(za, batch.reward[t]))
            ce_q = ce_heads(jax.vmap(q)(za), td[t])  # (B, N_q); no key: dropout is 0 here anyway
            ce_qlam = ce_heads(jax.vmap(qlam)(za), td_lam[t])
            for k in range(5):
                lv += rho**t * jnp.mean(ce_q[:, k])
                lq += rho**t * jnp.mean(ce_qlam[:, k])
            z = jax.vmap(dyn)(za)
            zs.append(z)
            lc += rho**t * jnp.mean((z - z_next[t]) ** 2)
        lc, lr, lv, lq = lc / H, lr / H, lv / (H * 5), lq / (H * 5)
        total = 20 * lc + 0.1 * lr + 0.1 * lv + 0.1 * lq
        return total, (
            jnp.stack(zs),
            dict(consistency_loss=lc, reward_loss=lr, value_loss=lv, qlam_loss=lq),
        )

    ref_total, (ref_zs, ref_metrics) = eqx.filter_jit(naive)(part)
    np.testing.assert_allclose(float(total), float(ref_total), rtol=1e-5)
    for name, value in ref_metrics.items():
        np.testing.assert_allclose(float(metrics[name]), float(value), rtol=1e-5, err_msg=name)
        assert float(value) > 0
    np.testing.assert_allclose(zs, ref_zs, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- update


@pytest.mark.slow
def test_update_compiles_once_and_applies_the_steps(states, getkey):
    """Three updates with the same shapes trace once (pretrain is a traced flag). After a normal
    update the targets are the Polyak average of the *updated* online Q; in pretraining the
    policy and the prior are left unchanged."""
    cfg, state = states["pompc"]

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(state, batch, pretrain, key):
        return update(state, batch, cfg=cfg, pretrain=pretrain, key=key)

    s1, m1 = step(state, make_batch(getkey()), jnp.asarray(False), getkey())
    s2, m2 = step(s1, make_batch(getkey()), jnp.asarray(False), getkey())
    s3, m3 = step(s2, make_batch(getkey()), jnp.asarray(True), getkey())
    for m in (m1, m2):
        assert all(bool(jnp.isfinite(v)) for v in m.values()), m
    # Polyak: target <- target + tau (online_new - target)
    tau = cfg.loss.tau
    for online, old, new in (
        (s1.nets.value, state.target_value, s1.target_value),
        (s1.objective.qlam, state.objective.target_qlam, s1.objective.target_qlam),
    ):
        leaves = zip(
            jax.tree.leaves(eqx.filter(online, eqx.is_inexact_array)),
            jax.tree.leaves(eqx.filter(old, eqx.is_inexact_array)),
            jax.tree.leaves(eqx.filter(new, eqx.is_inexact_array)),
        )
        for o, t_old, t_new in leaves:
            np.testing.assert_allclose(t_new, t_old + tau * (o - t_old), rtol=1e-5, atol=1e-7)
    # everything learned moved in a normal update
    for get in (
        lambda s: s.nets.policy,
        lambda s: s.objective.prior.net,
        lambda s: s.nets.encoder,
        lambda s: s.objective.qlam,
    ):
        assert not all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves(eqx.filter(get(state), eqx.is_array)),
                jax.tree.leaves(eqx.filter(get(s1), eqx.is_array)),
            )
        )
    # pretraining: world model moves, policy and prior do not, their metrics are NaN
    for get in (lambda s: s.nets.policy, lambda s: s.objective.prior.net):
        for a, b in zip(
            jax.tree.leaves(eqx.filter(get(s2), eqx.is_array)),
            jax.tree.leaves(eqx.filter(get(s3), eqx.is_array)),
        ):
            np.testing.assert_array_equal(a, b)
    assert bool(jnp.isnan(m3["pi_loss"])) and bool(jnp.isnan(m3["prior_loss"]))
    assert bool(jnp.isfinite(m3["world_model_loss"]))


# --------------------------------------------------------------------------- shape errors


def test_wrong_shapes_fail_naming_the_dimension():
    with pytest.raises(jaxtyping.TypeCheckError, match="action"):
        ClippedGaussian(loc=jnp.zeros(2), scale=jnp.ones(3))
    good = make_batch(jr.key(0))
    with pytest.raises(jaxtyping.TypeCheckError, match="action"):
        Batch(
            obs=good.obs,
            action=jnp.zeros((H, B, A + 1)),  # inconsistent with plan_mean/plan_std
            reward=good.reward,
            terminated=good.terminated,
            plan_mean=good.plan_mean,
            plan_std=good.plan_std,
        )
    with pytest.raises(jaxtyping.TypeCheckError, match="batch"):
        Batch(
            obs=good.obs,
            action=good.action,
            reward=jnp.zeros((H, B + 1)),
            terminated=good.terminated,
            plan_mean=good.plan_mean,
            plan_std=good.plan_std,
        )
