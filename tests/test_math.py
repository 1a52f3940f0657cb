"""Two-hot regression in symlog space and the running percentile scale (pompc_eqx.math).

References are written here in numpy from the TD-MPC2 definitions (anchors-reference §1.4 and
§2 "RunningScale"); nothing is compared against stored outputs of our own code.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pompc_eqx.math import RunningScale, TwoHot, symexp, symlog


TWO_HOT = TwoHot(num_bins=101, vmin=-10.0, vmax=10.0)


def np_symlog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def np_symexp(x):
    return np.sign(x) * np.expm1(np.abs(x))


def np_two_hot(x: float, num_bins=101, vmin=-10.0, vmax=10.0) -> np.ndarray:
    """TD-MPC2 `two_hot`, in float64."""
    s = float(np.clip(np_symlog(x), vmin, vmax))
    u = (s - vmin) / ((vmax - vmin) / (num_bins - 1))
    i = int(np.floor(u))
    f = u - i
    out = np.zeros(num_bins)
    out[i] += 1 - f
    if i + 1 < num_bins:
        out[i + 1] += f
    return out


def test_symlog_symexp_inverse():
    x = jnp.array([-1e4, -37.5, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 42.0, 1e4])
    np.testing.assert_allclose(symexp(symlog(x)), x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(symlog(x), np_symlog(np.asarray(x, np.float64)), rtol=1e-6)
    # symlog is odd and compresses: |symlog(x)| <= |x|
    np.testing.assert_array_equal(symlog(-x), -symlog(x))
    assert bool(jnp.all(jnp.abs(symlog(x)) <= jnp.abs(x)))


def test_bin_size_matches_linspace():
    assert TWO_HOT.bin_size == pytest.approx(0.2)
    bins = np.linspace(-10, 10, 101)
    np.testing.assert_allclose(np.diff(bins), TWO_HOT.bin_size)


@pytest.mark.parametrize(
    "x",
    [0.0, 1e-3, -1e-3, 0.37, -0.37, 1.0, -2.5, 7.0, float(np.expm1(0.4)), 123.4, -987.6, 5e3, -2e4],
)
def test_decode_log_encode_roundtrip(x):
    """decode(log(encode(x))) = x: the softmax of log-weights is the two-hot vector itself and
    its expectation in symlog space is symlog(x) exactly (linear interpolation between bins)."""
    enc = TWO_HOT.encode(jnp.asarray(x, jnp.float32))
    assert float(jnp.sum(enc)) == pytest.approx(1.0, abs=1e-6)
    assert int(jnp.sum(enc > 0)) in (1, 2)
    out = TWO_HOT.decode(jnp.log(enc))
    np.testing.assert_allclose(float(out), x, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    "x, expected",
    [
        (1e6, math.expm1(10.0)),
        (-1e6, -math.expm1(10.0)),
        (3e4, math.expm1(10.0)),
        (-3e4, -math.expm1(10.0)),
    ],
)
def test_values_beyond_range_clip_to_symexp_vmax(x, expected):
    enc = TWO_HOT.encode(jnp.asarray(x, jnp.float32))
    edge = 100 if x > 0 else 0
    np.testing.assert_allclose(enc[edge], 1.0, atol=1e-5)
    assert float(jnp.sum(enc)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(float(TWO_HOT.decode(jnp.log(enc))), expected, rtol=1e-5)


def test_encode_hand_computed_half_half():
    """symlog(x) = 0.3 -> u = (0.3 + 10) / 0.2 = 51.5 -> weight 0.5 on bins 51 and 52."""
    x = jnp.asarray(math.expm1(0.3), jnp.float32)
    enc = np.asarray(TWO_HOT.encode(x))
    expected = np.zeros(101)
    expected[51] = expected[52] = 0.5
    np.testing.assert_allclose(enc, expected, atol=1e-4)
    # negative mirror: symlog = -0.3 -> u = 48.5 -> bins 48 and 49
    enc_neg = np.asarray(TWO_HOT.encode(-x))
    expected_neg = np.zeros(101)
    expected_neg[48] = expected_neg[49] = 0.5
    np.testing.assert_allclose(enc_neg, expected_neg, atol=1e-4)


def test_encode_quarter_weights_and_exact_bins():
    # symlog(x) = -1.25 -> u = 43.75 -> 0.25 on bin 43, 0.75 on bin 44
    enc = np.asarray(TWO_HOT.encode(jnp.asarray(-math.expm1(1.25), jnp.float32)))
    assert np.flatnonzero(enc > 1e-6).tolist() == [43, 44]
    np.testing.assert_allclose(enc[[43, 44]], [0.25, 0.75], atol=1e-4)
    # exactly on a bin: x = 0 -> bin 50 only; the two ends of the range -> bins 0 and 100
    for x, k in [(0.0, 50), (-math.expm1(10.0), 0), (math.expm1(10.0), 100)]:
        enc = np.asarray(TWO_HOT.encode(jnp.asarray(x, jnp.float32)))
        onehot = np.zeros(101)
        onehot[k] = 1.0
        np.testing.assert_allclose(enc, onehot, atol=1e-4)


@pytest.mark.parametrize("x", [0.0, 0.31, -4.2, 17.0, -250.0, 1e5])
def test_encode_matches_numpy_reference(x):
    np.testing.assert_allclose(
        np.asarray(TWO_HOT.encode(jnp.asarray(x, jnp.float32))), np_two_hot(x), atol=2e-5
    )


def test_decode_is_expectation_in_symlog_space():
    """The read-out is symexp(E[bin]) and not E[symexp(bin)] (anchors §1.4)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=101)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    bins = np.linspace(-10, 10, 101)
    expected = np_symexp(np.sum(p * bins))
    wrong = np.sum(p * np_symexp(bins))
    out = float(TWO_HOT.decode(jnp.asarray(logits, jnp.float32)))
    np.testing.assert_allclose(out, expected, rtol=1e-4)
    assert abs(out - wrong) > 1e-2 * abs(wrong)


@pytest.mark.parametrize("x", [0.0, 0.7, -3.3, 55.0])
def test_soft_cross_entropy_by_hand(x):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=101)
    m = logits.max()
    log_softmax = logits - m - np.log(np.sum(np.exp(logits - m)))
    expected = -np.sum(np_two_hot(x) * log_softmax)
    out = TWO_HOT.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(float(out), expected, rtol=1e-5)
    # uniform logits: CE = log(K) whatever the target
    uniform = TWO_HOT.cross_entropy(jnp.zeros(101), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(float(uniform), math.log(101), rtol=1e-6)


def test_running_scale_matches_numpy():
    """S <- S + tau (max(1, p95 - p5) - S), np.percentile 'linear', clamp before the EMA."""
    rng = np.random.default_rng(2)
    tau = 0.2  # large tau so that the sequence moves visibly
    spreads = [0.1, 5.0, 0.3, 40.0, 0.01, 2.0, 0.5, 12.0, 0.05, 0.8]
    scale = RunningScale.init()
    update = jax.jit(lambda s, x: s.update(x, tau))
    s_ref = 1.0
    clamp_mattered = False
    for spread in spreads:
        x = rng.normal(loc=rng.normal() * 10, scale=spread, size=37).astype(np.float32)
        p5, p95 = np.percentile(x.astype(np.float64), [5.0, 95.0])
        s_ref = s_ref + tau * (max(p95 - p5, 1.0) - s_ref)
        # The JAX ports' variant (EMA of the raw range, clipped afterwards) differs here.
        clamp_mattered |= (p95 - p5) < 1.0 and s_ref > 1.0
        scale = update(scale, jnp.asarray(x))
        np.testing.assert_allclose(float(scale.value), s_ref, rtol=1e-5)
        assert float(scale.value) >= 1.0
    assert clamp_mattered


def test_running_scale_has_no_gradient():
    x = jnp.linspace(-3.0, 3.0, 20)
    g = jax.grad(lambda xx: RunningScale.init().update(xx, 0.5).value)(x)
    np.testing.assert_array_equal(g, jnp.zeros_like(x))
