"""Discrete (two-hot) regression in symlog space and the running percentile scale.

Conventions follow TD-MPC2 (`tdmpc2/common/math.py`, `scale.py`): bins are equally spaced on
[vmin, vmax] in *symlog* space; the scalar read-out takes the expectation in symlog space and
applies symexp afterwards.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def symlog(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


class TwoHot(eqx.Module):
    """Two-hot encoding of scalars over `num_bins` bins on [vmin, vmax] in symlog space."""

    num_bins: int = eqx.field(static=True)
    vmin: float = eqx.field(static=True)
    vmax: float = eqx.field(static=True)

    @property
    def bin_size(self) -> float:
        return (self.vmax - self.vmin) / (self.num_bins - 1)

    def encode(self, x: Float[Array, ""]) -> Float[Array, " bins"]:
        """The two-hot target of one scalar: weight 1-f on bin i and f on bin i+1."""
        s = jnp.clip(symlog(x), self.vmin, self.vmax)
        u = (s - self.vmin) / self.bin_size
        i = jnp.floor(u)
        frac = u - i
        i = i.astype(jnp.int32)
        # At s = vmax, bin i+1 is out of range and one_hot gives zeros (weight frac = 0 anyway).
        return (1 - frac) * jax.nn.one_hot(i, self.num_bins) + frac * jax.nn.one_hot(
            i + 1, self.num_bins
        )

    def decode(self, logits: Float[Array, " bins"]) -> Float[Array, ""]:
        """Scalar read-out: symexp of the softmax-weighted bin centre (in symlog space)."""
        bins = jnp.linspace(self.vmin, self.vmax, self.num_bins)
        return symexp(jnp.sum(jax.nn.softmax(logits) * bins))

    def cross_entropy(
        self, logits: Float[Array, " bins"], target: Float[Array, ""]
    ) -> Float[Array, ""]:
        """Soft cross-entropy between the predicted logits and the two-hot target."""
        return -jnp.sum(self.encode(target) * jax.nn.log_softmax(logits))


class RunningScale(eqx.Module):
    """S <- S + tau * (max(1, p95 - p5) - S), starting at 1 (TD-MPC2's RunningScale).

    The clamp comes before the EMA, so S >= 1 always and dividing by S equals dividing by
    max(1, S) as written in Eqs. 12, 13, 17 and 18 of the paper.
    """

    value: Float[Array, ""]

    @staticmethod
    def init() -> "RunningScale":
        return RunningScale(value=jnp.ones((), jnp.float32))

    def update(self, x: Float[Array, " batch"], tau: float) -> "RunningScale":
        p5, p95 = jnp.percentile(jax.lax.stop_gradient(x), jnp.array([5.0, 95.0]))
        spread = jnp.maximum(p95 - p5, 1.0)
        return RunningScale(value=self.value + tau * (spread - self.value))
