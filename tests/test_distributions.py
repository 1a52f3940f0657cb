"""Action distributions, their KLs and the policy families (pompc_eqx.distributions).

Closed-form KLs are checked against Monte-Carlo estimates drawn here with numpy in float64, with
log-densities (and tanh change-of-variables terms) written out in the test; tolerances come from
the Monte-Carlo standard error.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest

from pompc_eqx.config import PolicyConfig
from pompc_eqx.distributions import (
    ClippedGaussian,
    ClippedGaussianFamily,
    TanhGaussian,
    TanhGaussianFamily,
    gaussian_kl,
    kl_divergence,
    make_family,
)
from pompc_eqx.presets import PRESETS


LOC_P = np.array([0.3, -0.4, 0.1])
SCALE_P = np.array([0.5, 0.3, 0.6])
LOC_Q = np.array([-0.1, 0.2, 0.4])
SCALE_Q = np.array([0.7, 0.45, 0.35])
N_MC = 400_000


def np_log_normal(x, loc, scale):
    """Elementwise log N(x; loc, scale)."""
    return -0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)


def tanh_log_density(a, loc, scale):
    """log-density of a = tanh(u), u ~ N(loc, scale), summed over the last axis."""
    return np.sum(np_log_normal(np.arctanh(a), loc, scale) - np.log1p(-(a**2)), axis=-1)


def assert_within_se(estimate, samples_or_se, reference, k=5.0):
    se = (
        samples_or_se
        if np.isscalar(samples_or_se)
        else np.std(samples_or_se) / math.sqrt(len(samples_or_se))
    )
    assert abs(estimate - reference) < k * se + 1e-6, (estimate, reference, se)


def f32(x):
    return jnp.asarray(x, jnp.float32)


@pytest.mark.parametrize("direction", ["pq", "qp"])
def test_gaussian_kl_matches_monte_carlo(direction):
    (lp, sp, lq, sq) = (
        (LOC_P, SCALE_P, LOC_Q, SCALE_Q) if direction == "pq" else (LOC_Q, SCALE_Q, LOC_P, SCALE_P)
    )
    rng = np.random.default_rng(0)
    x = lp + sp * rng.standard_normal((N_MC, 3))
    per_sample = np.sum(np_log_normal(x, lp, sp) - np_log_normal(x, lq, sq), axis=-1)
    closed = float(jnp.sum(gaussian_kl(f32(lp), f32(sp), f32(lq), f32(sq))))
    assert_within_se(np.mean(per_sample), per_sample, closed)
    # KL is not symmetric: both directions are exercised and differ here
    other = float(jnp.sum(gaussian_kl(f32(lq), f32(sq), f32(lp), f32(sp))))
    assert abs(closed - other) > 0.05


def test_gaussian_kl_zero_iff_equal():
    np.testing.assert_allclose(
        gaussian_kl(f32(LOC_P), f32(SCALE_P), f32(LOC_P), f32(SCALE_P)), 0.0, atol=1e-7
    )
    assert bool(jnp.all(gaussian_kl(f32(LOC_P), f32(SCALE_P), f32(LOC_Q), f32(SCALE_Q)) > 0))


@pytest.mark.parametrize("direction", ["pq", "qp"])
def test_kl_divergence_two_clipped_gaussians_vs_monte_carlo(direction, getkey):
    """Same space -> closed-form KL of the (pre-clip) Gaussians, as in BMPC."""
    (lp, sp, lq, sq) = (
        (LOC_P, SCALE_P, LOC_Q, SCALE_Q) if direction == "pq" else (LOC_Q, SCALE_Q, LOC_P, SCALE_P)
    )
    p = ClippedGaussian(loc=f32(lp), scale=f32(sp))
    q = ClippedGaussian(loc=f32(lq), scale=f32(sq))
    kl = float(kl_divergence(p, q, reduction="sum", key=getkey()))
    rng = np.random.default_rng(1)
    x = lp + sp * rng.standard_normal((N_MC, 3))
    per_sample = np.sum(np_log_normal(x, lp, sp) - np_log_normal(x, lq, sq), axis=-1)
    assert_within_se(np.mean(per_sample), per_sample, kl)


@pytest.mark.parametrize("direction", ["pq", "qp"])
def test_kl_divergence_two_tanh_gaussians_vs_action_space_monte_carlo(direction, getkey):
    """KL is invariant under the shared bijection tanh: the closed form of the pre-squash
    Gaussians equals an MC estimate in *action* space with change-of-variables densities."""
    (lp, sp, lq, sq) = (
        (LOC_P, SCALE_P, LOC_Q, SCALE_Q) if direction == "pq" else (LOC_Q, SCALE_Q, LOC_P, SCALE_P)
    )
    p = TanhGaussian(loc=f32(lp), scale=f32(sp))
    q = TanhGaussian(loc=f32(lq), scale=f32(sq))
    kl = float(kl_divergence(p, q, reduction="sum", key=getkey()))
    np.testing.assert_allclose(
        kl, float(jnp.sum(gaussian_kl(p.loc, p.scale, q.loc, q.scale))), rtol=1e-6
    )
    rng = np.random.default_rng(2)
    a = np.tanh(lp + sp * rng.standard_normal((N_MC, 3)))
    per_sample = tanh_log_density(a, lp, sp) - tanh_log_density(a, lq, sq)
    assert_within_se(np.mean(per_sample), per_sample, kl)


def _impl_mc(p, q, key, num_keys=2048):
    """Average of the implementation's 8-sample MC estimator over many keys, and its SE."""
    per_key = jax.jit(
        jax.vmap(lambda k: kl_divergence(p, q, reduction="sum", key=k, num_mc_samples=8))
    )(jr.split(key, num_keys))
    per_key = np.asarray(per_key, np.float64)
    return per_key.mean(), per_key.std() / math.sqrt(num_keys), per_key


def test_kl_divergence_cross_family_tanh_to_clipped(getkey):
    """TanhGaussian p vs ClippedGaussian q: no closed form -> reparameterised MC. The clipped
    Gaussian's density on (-1, 1) is the Gaussian's, and p has no mass on the boundary, so the
    reference E_p[log p(a) - log N(a; loc_q, scale_q)] is the exact KL."""
    lq = np.array([0.2, -0.3, 0.0])
    sq = np.array([0.6, 0.5, 0.8])
    p = TanhGaussian(loc=f32(LOC_P), scale=f32(SCALE_P))
    q = ClippedGaussian(loc=f32(lq), scale=f32(sq))
    impl, impl_se, per_key = _impl_mc(p, q, getkey())
    assert np.std(per_key) > 0  # it really is a Monte-Carlo estimate (key-dependent)
    rng = np.random.default_rng(3)
    a = np.tanh(LOC_P + SCALE_P * rng.standard_normal((N_MC, 3)))
    per_sample = tanh_log_density(a, LOC_P, SCALE_P) - np.sum(np_log_normal(a, lq, sq), axis=-1)
    ref_se = np.std(per_sample) / math.sqrt(N_MC)
    assert_within_se(impl, math.hypot(impl_se, ref_se), np.mean(per_sample))
    # and it is *not* the (meaningless here) closed form of the two underlying Gaussians
    closed = float(jnp.sum(gaussian_kl(p.loc, p.scale, q.loc, q.scale)))
    assert abs(np.mean(per_sample) - closed) > 10 * math.hypot(impl_se, ref_se)


def test_kl_divergence_cross_family_clipped_to_tanh(getkey):
    """ClippedGaussian p (narrow, far from the bounds, so clipping has negligible mass) vs
    TanhGaussian q."""
    lp, sp = np.array([0.2, -0.1, 0.3]), np.array([0.12, 0.1, 0.15])
    p = ClippedGaussian(loc=f32(lp), scale=f32(sp))
    q = TanhGaussian(loc=f32(LOC_Q), scale=f32(SCALE_Q))
    impl, impl_se, _ = _impl_mc(p, q, getkey())
    rng = np.random.default_rng(4)
    a = lp + sp * rng.standard_normal((N_MC, 3))
    assert np.all(np.abs(a) < 1)
    per_sample = np.sum(np_log_normal(a, lp, sp), axis=-1) - tanh_log_density(a, LOC_Q, SCALE_Q)
    ref_se = np.std(per_sample) / math.sqrt(N_MC)
    assert_within_se(impl, math.hypot(impl_se, ref_se), np.mean(per_sample))


@pytest.mark.parametrize("pair", ["clipped", "tanh", "cross"])
def test_kl_reduction_mean_is_sum_over_action_dim(pair, getkey):
    if pair == "clipped":
        p, q = (
            ClippedGaussian(loc=f32(LOC_P), scale=f32(SCALE_P)),
            ClippedGaussian(loc=f32(LOC_Q), scale=f32(SCALE_Q)),
        )
    elif pair == "tanh":
        p, q = (
            TanhGaussian(loc=f32(LOC_P), scale=f32(SCALE_P)),
            TanhGaussian(loc=f32(LOC_Q), scale=f32(SCALE_Q)),
        )
    else:
        p, q = (
            TanhGaussian(loc=f32(LOC_P), scale=f32(SCALE_P)),
            ClippedGaussian(loc=f32(LOC_Q), scale=f32(SCALE_Q)),
        )
    key = getkey()
    total = kl_divergence(p, q, reduction="sum", key=key)
    mean = kl_divergence(p, q, reduction="mean", key=key)
    np.testing.assert_allclose(float(mean), float(total) / 3, rtol=1e-6)


# --------------------------------------------------------------------------- contract tests


def make_dist(kind, loc, scale):
    cls = TanhGaussian if kind == "tanh" else ClippedGaussian
    return cls(loc=f32(loc), scale=f32(scale))


@pytest.mark.parametrize("kind", ["tanh", "clipped"])
def test_samples_in_bounds_and_log_probs_finite(kind, getkey):
    dist = make_dist(kind, [3.0, -3.0, 0.0, 0.5], [2.0, 2.0, 5.0, 0.1])  # heavy saturation
    keys = jr.split(getkey(), 2000)
    a = jax.vmap(lambda k: dist.sample(key=k))(keys)
    a2, logp = jax.vmap(lambda k: dist.sample_and_log_prob(key=k))(keys)
    a3, ent = jax.vmap(lambda k: dist.sample_with_entropy(key=k))(keys)
    for x in (a, a2, a3):
        assert bool(jnp.all(jnp.abs(x) <= 1.0))
    assert bool(jnp.any(jnp.abs(a) >= 1.0 - 1e-6))  # the boundary is reached
    assert bool(jnp.all(jnp.isfinite(logp))) and bool(jnp.all(jnp.isfinite(ent)))
    lp = jax.vmap(dist.log_prob)(a)
    assert bool(jnp.all(jnp.isfinite(lp)))
    corners = jnp.array([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, 0.0, 0.0]])
    assert bool(jnp.all(jnp.isfinite(jax.vmap(dist.log_prob)(corners))))


@pytest.mark.parametrize("kind", ["tanh", "clipped"])
def test_sampling_is_deterministic_for_a_fixed_key(kind, getkey):
    dist = make_dist(kind, LOC_P, SCALE_P)
    k1, k2 = getkey(), getkey()
    for method in (
        dist.sample,
        lambda key: dist.sample_and_log_prob(key=key),
        lambda key: dist.sample_with_entropy(key=key),
    ):
        x, y = method(key=k1), method(key=k1)
        jax.tree.map(np.testing.assert_array_equal, x, y)
        z = method(key=k2)
        assert not np.allclose(jax.tree.leaves(x)[0], jax.tree.leaves(z)[0])
    # all three sampling paths draw the same reparameterised action from one key
    np.testing.assert_allclose(dist.sample(key=k1), dist.sample_and_log_prob(key=k1)[0], atol=1e-7)
    np.testing.assert_allclose(dist.sample(key=k1), dist.sample_with_entropy(key=k1)[0], atol=1e-7)


@pytest.mark.parametrize("kind", ["tanh", "clipped"])
def test_sample_with_entropy_is_minus_A_times_presquash_log_density(kind, getkey):
    """TD-MPC2 (HEAD) scaled entropy: -A * sum_i log N(u_i; loc_i, scale_i) at the pre-squash u."""
    loc, scale = np.array([0.2, -0.3, 0.1]), np.array([0.3, 0.2, 0.25])  # no clipping, mild tanh
    dist = make_dist(kind, loc, scale)
    for _ in range(5):
        a, ent = dist.sample_with_entropy(key=getkey())
        a64 = np.asarray(a, np.float64)
        u = np.arctanh(a64) if kind == "tanh" else a64
        assert np.all(np.abs(a64) < 1)
        expected = -3 * np.sum(np_log_normal(u, loc, scale))
        np.testing.assert_allclose(float(ent), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["tanh", "clipped"])
def test_log_prob_matches_handwritten_density(kind, getkey):
    loc, scale = np.array([0.2, -0.3, 0.1]), np.array([0.3, 0.2, 0.25])
    dist = make_dist(kind, loc, scale)
    for _ in range(5):
        a, logp = dist.sample_and_log_prob(key=getkey())
        a64 = np.asarray(a, np.float64)
        if kind == "tanh":
            expected = tanh_log_density(a64, loc, scale)
        else:
            expected = np.sum(np_log_normal(a64, loc, scale))
        np.testing.assert_allclose(float(logp), expected, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(float(dist.log_prob(a)), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind", ["tanh", "clipped"])
def test_mean_action_and_entropy(kind):
    dist = make_dist(kind, LOC_P, SCALE_P)
    expected_mean = np.tanh(LOC_P) if kind == "tanh" else LOC_P
    np.testing.assert_allclose(dist.mean_action(), expected_mean, rtol=1e-6)
    expected_entropy = np.sum(0.5 * np.log(2 * np.pi * np.e * SCALE_P**2))
    np.testing.assert_allclose(float(dist.entropy()), expected_entropy, rtol=1e-5)


# --------------------------------------------------------------------------- families


@pytest.mark.parametrize(
    "family_cls, lo, hi", [(TanhGaussianFamily, -10.0, 2.0), (ClippedGaussianFamily, -3.0, 1.0)]
)
def test_family_log_std_squash(family_cls, lo, hi):
    family = family_cls(lo, hi)
    raw = jnp.array([-30.0, 0.0, 30.0, 0.7])
    expected = lo + 0.5 * (hi - lo) * (np.tanh(np.asarray(raw, np.float64)) + 1)
    np.testing.assert_allclose(family.log_std(raw), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(family.log_std(raw)[:3], [lo, (lo + hi) / 2, hi], atol=1e-5)
    mean = jnp.array([2.0, -0.5, 0.0, 1.0])
    dist = family(mean, raw)
    np.testing.assert_allclose(dist.scale, np.exp(expected), rtol=1e-5)
    if family_cls is TanhGaussianFamily:
        assert isinstance(dist, TanhGaussian)
        np.testing.assert_allclose(dist.loc, mean)  # squash applies to samples, not to loc
    else:
        assert isinstance(dist, ClippedGaussian)
        np.testing.assert_allclose(
            dist.loc, np.tanh(np.asarray(mean)), rtol=1e-6
        )  # BMPC: tanh mean


def test_presets_pick_the_documented_families():
    assert isinstance(make_family(PRESETS["tdmpc2"][1].policy), TanhGaussianFamily)
    assert make_family(PRESETS["tdmpc2"][1].policy).log_std_min == -10.0
    for name in ("bmpc", "pompc"):
        fam = make_family(PRESETS[name][1].policy)
        assert isinstance(fam, ClippedGaussianFamily)
        assert (fam.log_std_min, fam.log_std_max) == (-3.0, 1.0)
    # an unknown family is refused already by the typed config (beartype via jaxtyping's hook)
    with pytest.raises(jaxtyping.TypeCheckError, match="distribution"):
        PolicyConfig(distribution="beta")  # type: ignore[arg-type]
