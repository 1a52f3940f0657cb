"""Action distributions of the sampling policy, the learned prior and the planner (spec §2).

Every distribution is a diagonal Gaussian in some space, pushed to actions in [-1, 1]:
- `TanhGaussian` (TD-MPC2): u ~ N(loc, scale), a = tanh(u).
- `ClippedGaussian` (BMPC): a = clip(N(loc, scale), -1, 1) with loc = tanh(network mean). The
  planner's Gaussian N(a_bar_0, sigma_0) is one of these too.

KL between two distributions of the same `space` is the closed form of their Gaussians (KL is
invariant under the same bijection, so for two TanhGaussians it equals the pre-squash KL;
sample clipping is ignored, as in BMPC). Across spaces there is no closed form and
`kl_divergence` falls back to a reparameterised Monte-Carlo estimate.
"""

import abc
import math
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Key

from .config import PolicyConfig


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_ATANH_EDGE = 1.0 - 1e-6


class AbstractActionDist(eqx.Module):
    """A distribution over one action vector in [-1, 1] (unbatched; callers vmap)."""

    loc: eqx.AbstractVar[Float[Array, " action"]]
    scale: eqx.AbstractVar[Float[Array, " action"]]
    space: eqx.AbstractClassVar[str]
    """Distributions with equal `space` have a closed-form KL (that of their Gaussians)."""

    @abc.abstractmethod
    def sample(self, *, key: Key[Array, ""]) -> Float[Array, " action"]:
        """One reparameterised sample."""

    @abc.abstractmethod
    def sample_and_log_prob(
        self, *, key: Key[Array, ""]
    ) -> tuple[Float[Array, " action"], Float[Array, ""]]:
        """One reparameterised sample and its exact log-density."""

    @abc.abstractmethod
    def log_prob(self, action: Float[Array, " action"]) -> Float[Array, ""]:
        """Log-density of an action (actions on the boundary are nudged inside)."""

    @abc.abstractmethod
    def mean_action(self) -> Float[Array, " action"]:
        """The action of the Gaussian's mean (used when acting without sampling)."""

    def sample_with_entropy(
        self, *, key: Key[Array, ""]
    ) -> tuple[Float[Array, " action"], Float[Array, ""]]:
        """A sample and TD-MPC2's *scaled entropy* estimate at it.

        TD-MPC2 (since Dec 2024) uses -A * log N(u; loc, scale), the Gaussian log-density of
        the pre-squash sample times the action dimension A, as its entropy term; BMPC does the
        same for its Gaussian. We follow both (spec §2).
        """
        eps = jr.normal(key, self.loc.shape)
        log_density = jnp.sum(-0.5 * eps**2 - jnp.log(self.scale) - _HALF_LOG_2PI)
        return self._push(self.loc + self.scale * eps), -self.loc.shape[0] * log_density

    @abc.abstractmethod
    def _push(self, u: Float[Array, " action"]) -> Float[Array, " action"]:
        """Map a Gaussian sample to an action."""

    def entropy(self) -> Float[Array, ""]:
        """Entropy of the underlying Gaussian, summed over action dimensions (for logging)."""
        return jnp.sum(jnp.log(self.scale) + 0.5 + _HALF_LOG_2PI)


def gaussian_kl(
    loc_p: Float[Array, " action"],
    scale_p: Float[Array, " action"],
    loc_q: Float[Array, " action"],
    scale_q: Float[Array, " action"],
) -> Float[Array, " action"]:
    """Per-dimension KL(N(loc_p, scale_p) || N(loc_q, scale_q))."""
    return jnp.log(scale_q / scale_p) + (scale_p**2 + (loc_p - loc_q) ** 2) / (2 * scale_q**2) - 0.5


def kl_divergence(
    p: AbstractActionDist,
    q: AbstractActionDist,
    *,
    reduction: Literal["sum", "mean"],
    key: Key[Array, ""],
    num_mc_samples: int = 8,
) -> Float[Array, ""]:
    """KL(p || q), summed (true KL) or averaged over action dimensions.

    Closed form when both live in the same space; otherwise a reparameterised Monte-Carlo
    estimate E_{a~p}[log p(a) - log q(a)] with `num_mc_samples` samples (`key` is unused in
    the closed-form case).
    """
    action_dim = p.loc.shape[0]
    if p.space == q.space:
        total = jnp.sum(gaussian_kl(p.loc, p.scale, q.loc, q.scale))
    else:

        def one(k):
            a, log_p = p.sample_and_log_prob(key=k)
            return log_p - q.log_prob(a)

        total = jnp.mean(jax.vmap(one)(jr.split(key, num_mc_samples)))
    return total if reduction == "sum" else total / action_dim


class TanhGaussian(AbstractActionDist):
    """a = tanh(u), u ~ N(loc, scale) (TD-MPC2's policy)."""

    loc: Float[Array, " action"]
    scale: Float[Array, " action"]
    space: ClassVar[str] = "tanh"

    def _push(self, u: Float[Array, " action"]) -> Float[Array, " action"]:
        return jnp.tanh(u)

    def sample(self, *, key: Key[Array, ""]) -> Float[Array, " action"]:
        return jnp.tanh(self.loc + self.scale * jr.normal(key, self.loc.shape))

    def sample_and_log_prob(
        self, *, key: Key[Array, ""]
    ) -> tuple[Float[Array, " action"], Float[Array, ""]]:
        eps = jr.normal(key, self.loc.shape)
        action = jnp.tanh(self.loc + self.scale * eps)
        log_density = jnp.sum(-0.5 * eps**2 - jnp.log(self.scale) - _HALF_LOG_2PI)
        # Change of variables through tanh; 1e-6 keeps it finite at |a| -> 1 (TD-MPC2).
        return action, log_density - jnp.sum(jnp.log(jax.nn.relu(1 - action**2) + 1e-6))

    def log_prob(self, action: Float[Array, " action"]) -> Float[Array, ""]:
        a = jnp.clip(action, -_ATANH_EDGE, _ATANH_EDGE)
        z = (jnp.arctanh(a) - self.loc) / self.scale
        log_density = jnp.sum(-0.5 * z**2 - jnp.log(self.scale) - _HALF_LOG_2PI)
        return log_density - jnp.sum(jnp.log(jax.nn.relu(1 - a**2) + 1e-6))

    def mean_action(self) -> Float[Array, " action"]:
        return jnp.tanh(self.loc)


class ClippedGaussian(AbstractActionDist):
    """a = clip(N(loc, scale), -1, 1) (BMPC's policy, and the MPPI planner's Gaussian)."""

    loc: Float[Array, " action"]
    scale: Float[Array, " action"]
    space: ClassVar[str] = "action"

    def _push(self, u: Float[Array, " action"]) -> Float[Array, " action"]:
        return jnp.clip(u, -1.0, 1.0)

    def sample(self, *, key: Key[Array, ""]) -> Float[Array, " action"]:
        return jnp.clip(self.loc + self.scale * jr.normal(key, self.loc.shape), -1.0, 1.0)

    def sample_and_log_prob(
        self, *, key: Key[Array, ""]
    ) -> tuple[Float[Array, " action"], Float[Array, ""]]:
        action = self.sample(key=key)
        return action, self.log_prob(action)

    def log_prob(self, action: Float[Array, " action"]) -> Float[Array, ""]:
        z = (action - self.loc) / self.scale
        return jnp.sum(-0.5 * z**2 - jnp.log(self.scale) - _HALF_LOG_2PI)

    def mean_action(self) -> Float[Array, " action"]:
        return self.loc


class AbstractDistFamily(eqx.Module):
    """Turns a policy network's raw outputs (mean, log-std) into a distribution."""

    log_std_min: eqx.AbstractVar[float]
    log_std_max: eqx.AbstractVar[float]

    @abc.abstractmethod
    def __call__(
        self, mean: Float[Array, " action"], raw_log_std: Float[Array, " action"]
    ) -> AbstractActionDist:
        """Build the distribution for one state."""

    def log_std(self, raw: Float[Array, " action"]) -> Float[Array, " action"]:
        """Squash a raw log-std into [log_std_min, log_std_max] (TD-MPC2 `math.log_std`)."""
        return self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(raw) + 1)


class TanhGaussianFamily(AbstractDistFamily):
    log_std_min: float = eqx.field(static=True)
    log_std_max: float = eqx.field(static=True)

    def __call__(
        self, mean: Float[Array, " action"], raw_log_std: Float[Array, " action"]
    ) -> AbstractActionDist:
        return TanhGaussian(loc=mean, scale=jnp.exp(self.log_std(raw_log_std)))


class ClippedGaussianFamily(AbstractDistFamily):
    log_std_min: float = eqx.field(static=True)
    log_std_max: float = eqx.field(static=True)

    def __call__(
        self, mean: Float[Array, " action"], raw_log_std: Float[Array, " action"]
    ) -> AbstractActionDist:
        return ClippedGaussian(loc=jnp.tanh(mean), scale=jnp.exp(self.log_std(raw_log_std)))


def make_family(cfg: PolicyConfig) -> AbstractDistFamily:
    match cfg.distribution:
        case "tanh-gaussian":
            return TanhGaussianFamily(cfg.log_std_min, cfg.log_std_max)
        case "clipped-gaussian":
            return ClippedGaussianFamily(cfg.log_std_min, cfg.log_std_max)
    raise ValueError(f"unknown distribution {cfg.distribution!r}")
