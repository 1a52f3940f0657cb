"""The adaptive prior (paper §4.2, Eqs. 12-13, Appendix G).

Stale replay entries at one latent state hold planner Gaussians from many planner versions: a
time-varying mixture. Our prior losses average per-entry KLs to these individual Gaussians
N(mu_i, sigma_i) with weights w_i, and each has a closed-form optimum over Gaussians N(m, s):

- reverse, sum_i w_i KL(N(m, s) || N(mu_i, sigma_i)): d/dm = 0 gives the *precision-weighted*
  mean m = sum w_i mu_i / sigma_i^2 / sum w_i / sigma_i^2, and d/ds = 0 gives the *harmonic*
  variance s^2 = sum w_i / sum (w_i / sigma_i^2): a narrow Gaussian that sits where the most
  confident (smallest sigma) entries are; with equally confident modes it sits *between* them.
- forward, sum_i w_i KL(N(mu_i, sigma_i) || N(m, s)): moment matching, m = weighted mean of the
  mu_i and s^2 = weighted mean of sigma_i^2 + (mu_i - m)^2: a wide Gaussian covering all modes.

The tests fit priors by gradient descent (on `kl_divergence` with the clipped-Gaussian family
of `pompc`, and with a `PolicyNet` through the actual `learned_prior_loss`) and compare them with these
optima and with the paper's qualitative claim. The last test measures Appendix G's claim: the
KL-term gradient of the sampling policy varies less across minibatches with a learned prior
than with the stored planner Gaussians themselves.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from pompc_eqx.agent import init_agent
from pompc_eqx.buffer import Batch
from pompc_eqx.config import LossConfig
from pompc_eqx.distributions import ClippedGaussian, ClippedGaussianFamily, kl_divergence
from pompc_eqx.math import RunningScale
from pompc_eqx.presets import PRESETS
from pompc_eqx.priors import learned_prior_loss, make_learned_prior
from pompc_eqx.world_model import PolicyNet


MODES = (-0.6, 0.6)
LATENT = 16


def stale_planner_gaussians(key, num=240, balanced=False):
    """Means drifting between the two modes in blocks (the planner changed its mind over time),
    with jitter; the +0.6 episodes are more frequent and (unless balanced) more confident."""
    k1, k2, k3 = jr.split(key, 3)
    block = np.arange(num) * 10 // num  # 10 episodes of the planner's history
    plus = (block % 5) < 3  # 60 % of the entries at +0.6
    mu = np.where(plus, MODES[1], MODES[0]) + 0.03 * np.asarray(jr.normal(k1, (num,)))
    if balanced:
        sigma = np.asarray(jr.uniform(k2, (num,), minval=0.08, maxval=0.12))
    else:
        sigma = np.where(
            plus,
            np.asarray(jr.uniform(k2, (num,), minval=0.06, maxval=0.1)),
            np.asarray(jr.uniform(k3, (num,), minval=0.15, maxval=0.25)),
        )
    return mu, sigma


def reverse_optimum(mu, sigma, w):
    prec = w / sigma**2
    return np.sum(prec * mu) / np.sum(prec), np.sqrt(np.sum(w) / np.sum(prec))


def forward_optimum(mu, sigma, w):
    m = np.sum(w * mu) / np.sum(w)
    return m, np.sqrt(np.sum(w * (sigma**2 + (mu - m) ** 2)) / np.sum(w))


@eqx.filter_jit
def fit_gaussian(mu, sigma, direction: str, steps: int = 1500):
    """Gradient descent on (m, log s) of the average per-entry KL, with the library's KL."""

    def loss(params):
        q = ClippedGaussian(loc=params[:1], scale=jnp.exp(params[1:]))

        def one(m, s):
            p = ClippedGaussian(loc=m[None], scale=s[None])
            a, b = (q, p) if direction == "reverse" else (p, q)
            return kl_divergence(a, b, reduction="sum", key=jr.key(0))

        return jnp.mean(jax.vmap(one)(mu, sigma))

    opt = optax.adam(0.03)
    params = jnp.array([0.0, 0.0])

    def step(carry, _):
        params, state = carry
        g = jax.grad(loss)(params)
        upd, state = opt.update(g, state, params)
        return (optax.apply_updates(params, upd), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params[0], jnp.exp(params[1])


@pytest.mark.parametrize("balanced", [False, True])
def test_kl_fits_match_analytic_optima_and_forward_covers_both_modes(balanced):
    mu, sigma = stale_planner_gaussians(jr.key(0), balanced=balanced)
    w = np.ones_like(mu)
    fits = {}
    for direction, optimum in (("reverse", reverse_optimum), ("forward", forward_optimum)):
        m, s = fit_gaussian(
            jnp.asarray(mu, jnp.float32), jnp.asarray(sigma, jnp.float32), direction
        )
        m_star, s_star = optimum(mu, sigma, w)
        np.testing.assert_allclose(float(m), m_star, atol=5e-3)
        np.testing.assert_allclose(float(s), s_star, rtol=2e-2)
        fits[direction] = (float(m), float(s))
    (m_r, s_r), (m_f, s_f) = fits["reverse"], fits["forward"]
    # forward KL: wide, centred between the modes, covering both
    assert s_f > 4 * s_r
    assert abs(m_f) < 0.2
    assert all(abs(mode - m_f) / 2 < s_f for mode in MODES)
    # reverse KL: narrow (harmonic std) -> at least one mode lies far outside its support
    assert max(abs(mode - m_r) / s_r for mode in MODES) > 5
    if balanced:
        # equally confident modes: the precision-weighted mean lies *between* them, where
        # no stored planner Gaussian puts mass (not mode-seeking in the mixture sense)
        assert abs(m_r) < 0.4 and all(abs(mode - m_r) / s_r > 3 for mode in MODES)
    else:
        # the more confident mode wins: the reverse fit sits near +0.6
        assert abs(m_r - MODES[1]) < 0.2 and abs(m_r - MODES[0]) / s_r > 8


def prior_cfg(direction):
    cfg = dataclasses.replace(PRESETS["pompc"][1], model_size="tiny", prior_loss=direction)
    return cfg.agent_config(obs_dim=4, action_dim=1, episode_length=100)


def dummy_batch(plan_mean, plan_std):
    """A Batch carrying only planner statistics (the prior loss reads nothing else)."""
    t, b, a = plan_mean.shape
    return Batch(
        obs=jnp.zeros((t, b, 4)),
        action=jnp.zeros((t - 1, b, a)),
        reward=jnp.zeros((t - 1, b)),
        terminated=jnp.zeros((t - 1, b)),
        plan_mean=plan_mean,
        plan_std=plan_std,
    )


def fixed_latent(key, shape=()):
    """SimNorm-like latents (groups of 8 on the simplex)."""
    x = jr.normal(key, (*shape, LATENT // 8, 8)) * 2
    return jax.nn.softmax(x, axis=-1).reshape(*shape, LATENT)


@eqx.filter_jit
def train_prior(prior, zs, batch, cfg, steps, lr=3e-3):
    """`steps` Adam steps on `learned_prior_loss` (running scale S_p carried as in `update`)."""
    opt = optax.adam(lr)
    params, static = eqx.partition(prior, eqx.is_inexact_array)

    def step(carry, k):
        params, opt_state, scale = carry

        def loss_fn(p):
            net = eqx.combine(p, static)
            return learned_prior_loss(net, zs, batch, cfg.prior_loss, scale, cfg.loss, k)

        (loss, (scale, _)), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, upd), opt_state, scale), loss

    init = (params, opt.init(params), RunningScale.init())
    (params, _, _), losses = jax.lax.scan(step, init, jr.split(jr.key(0), steps))
    return eqx.combine(params, static), losses


@pytest.mark.slow
def test_policy_net_prior_trained_by_prior_loss_reaches_the_optima():
    """A PolicyNet trained through `prior_loss` (rho^t/H weights over H=3 rows) on one latent."""
    mu, sigma = stale_planner_gaussians(jr.key(1))
    h, b = 3, len(mu) // 3
    # in storage order, so that the rows (t = 0, 1, 2) hold different parts of the history
    w = np.repeat(0.5 ** np.arange(h), b)  # row t weighted rho^t (rho = 0.5)
    plan_mean = jnp.asarray(np.concatenate([mu, np.zeros(b)]).reshape(h + 1, b, 1), jnp.float32)
    plan_std = jnp.asarray(np.concatenate([sigma, np.ones(b)]).reshape(h + 1, b, 1), jnp.float32)
    batch = dummy_batch(plan_mean, plan_std)
    z = fixed_latent(jr.key(3))
    zs = jnp.broadcast_to(z, (h, b, LATENT))
    fitted = {}
    for direction, optimum in (("reverse", reverse_optimum), ("forward", forward_optimum)):
        cfg = prior_cfg(direction)
        assert cfg.loss.rho == 0.5
        prior = PolicyNet(LATENT, 32, 1, ClippedGaussianFamily(-3.0, 1.0), key=jr.key(4))
        prior, losses = train_prior(prior, zs, batch, cfg, steps=600)
        assert float(losses[-1]) < float(losses[0])
        dist = prior(z)
        m_star, s_star = optimum(mu, sigma, w)
        np.testing.assert_allclose(float(dist.loc[0]), m_star, atol=0.02)
        np.testing.assert_allclose(float(dist.scale[0]), s_star, rtol=0.05)
        fitted[direction] = (float(dist.loc[0]), float(dist.scale[0]))
        # the rho^t weighting matters: the unweighted optimum is a different point here
        m_flat, _ = optimum(mu, sigma, np.ones_like(w))
        assert abs(m_flat - m_star) > 0.01
    (m_r, s_r), (m_f, s_f) = fitted["reverse"], fitted["forward"]
    assert s_f > 4 * s_r
    assert all(abs(mode - m_f) / 2 < s_f for mode in MODES)
    assert max(abs(mode - m_r) / s_r for mode in MODES) > 5


# --------------------------------------------------------------------------- Appendix G


@pytest.mark.slow
def test_learned_prior_lowers_policy_gradient_variance():
    """Appendix G: with stale, varying planner statistics the gradient of the KL term of the
    sampling policy's loss (lambda = inf, entropy off: the KL term alone) varies across
    resampled minibatches much more when regularised toward the replay samples themselves
    than toward a learned prior fitted (reverse KL, Eq. 12) to the same statistics."""
    num_states, per_state, minibatch, num_minibatches = 8, 60, 32, 64
    keys = jr.split(jr.key(5), 4)
    z_states = fixed_latent(keys[0], (num_states,))
    centre = np.asarray(jr.uniform(keys[1], (num_states,), minval=-0.3, maxval=0.3))
    mus, sigmas = [], []
    for s in range(num_states):
        mu, sigma = stale_planner_gaussians(jr.fold_in(keys[2], s), num=per_state, balanced=True)
        mus.append(centre[s] + mu)
        sigmas.append(sigma)
    mu_all = jnp.asarray(np.concatenate(mus), jnp.float32)
    sigma_all = jnp.asarray(np.concatenate(sigmas), jnp.float32)
    z_all = jnp.repeat(z_states, per_state, axis=0)
    n = len(mu_all)

    # learned prior fitted to every stored entry (one row, all entries)
    cfg_prior = prior_cfg("reverse")
    prior = PolicyNet(LATENT, 32, 1, ClippedGaussianFamily(-3.0, 1.0), key=keys[3])
    batch_all = dummy_batch(
        jnp.concatenate([mu_all, mu_all])[:, None].reshape(2, n, 1),
        jnp.concatenate([sigma_all, sigma_all])[:, None].reshape(2, n, 1),
    )
    prior, losses = train_prior(prior, z_all[None], batch_all, cfg_prior, steps=800, lr=3e-3)
    assert float(losses[-1]) < 0.5 * float(losses[0])
    for s in range(num_states):
        m_star, s_star = reverse_optimum(
            np.asarray(mus[s]), np.asarray(sigmas[s]), np.ones(per_state)
        )
        fitted = prior(z_states[s])
        assert abs(float(fitted.loc[0]) - m_star) < 0.05
        assert abs(float(fitted.scale[0]) - s_star) < 0.05

    # sampling policy loss: lambda = inf (KL only), entropy coefficient 0 -> the KL term alone
    base = dataclasses.replace(
        PRESETS["bmpc"][1], model_size="tiny", loss=LossConfig(entropy_coef=0.0)
    )
    cfg = base.agent_config(obs_dim=4, action_dim=1, episode_length=100)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, latent_dim=LATENT))
    state = init_agent(cfg, key=jr.key(6))
    # swap the objective's prior module: the stored planner Gaussians -> the fitted network
    learned = eqx.tree_at(lambda p: p.net, make_learned_prior(cfg, key=jr.key(8)), prior)
    learned_state = eqx.tree_at(lambda s: s.objective.prior, state, learned)

    def grads_over_minibatches(st):
        def one(key):
            idx_key, loss_key = jr.split(key)
            idx = jr.choice(idx_key, n, (minibatch,), replace=True)
            zs = z_all[idx][None]
            batch = dummy_batch(
                jnp.stack([mu_all[idx], mu_all[idx]])[..., None],
                jnp.stack([sigma_all[idx], sigma_all[idx]])[..., None],
            )
            loss_fn = lambda pol: st.objective.policy_loss(
                pol, st.nets, zs, batch, cfg.loss, key=loss_key
            )
            g, (_, metrics) = eqx.filter_grad(loss_fn, has_aux=True)(st.nets.policy)
            flat = jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)])
            return flat, jnp.stack([metrics["kl_mean"], metrics["kl_std"]])

        return jax.vmap(one)(jr.split(jr.key(7), num_minibatches))

    g_replay, kl_replay = eqx.filter_jit(grads_over_minibatches)(state)
    g_learned, kl_learned = eqx.filter_jit(grads_over_minibatches)(learned_state)
    var_replay = float(jnp.sum(jnp.var(g_replay, axis=0)))
    var_learned = float(jnp.sum(jnp.var(g_learned, axis=0)))
    print(
        f"\nAppendix G: total gradient variance replay {var_replay:.4g} "
        f"vs learned prior {var_learned:.4g} (ratio {var_replay / var_learned:.1f})"
    )
    assert var_learned > 0  # minibatches differ in their states: not a degenerate comparison
    # the minibatches' mix of states is a shared source of variance; staleness adds the rest
    assert var_replay > 3 * var_learned
    # both regularise toward the same place on average: the mean gradients point the same way
    mean_r, mean_l = jnp.mean(g_replay, 0), jnp.mean(g_learned, 0)
    cos = float(mean_r @ mean_l / (jnp.linalg.norm(mean_r) * jnp.linalg.norm(mean_l)))
    print(f"cosine of the mean gradients {cos:.3f}")
    # Appendix G.1: a reverse-KL prior has log pi_p = E_k[log pi^k] + const, so the *expected*
    # gradients agree (up to the running scale S_KL)
    assert cos > 0.95
    # Fig. 7's diagnostic: mean and std of the KL term are larger toward the replay samples
    kl_replay, kl_learned = np.asarray(kl_replay).mean(0), np.asarray(kl_learned).mean(0)
    print(f"KL term mean/std: replay {kl_replay}, learned {kl_learned}")
    assert kl_replay[0] > 2 * kl_learned[0] and kl_replay[1] > 2 * kl_learned[1]
