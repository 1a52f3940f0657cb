"""The prior pi_p that the sampling policy is regularised toward (paper §4.2, Eqs. 12-13, 17-18).

A prior says what it is at a latent state (given the planner Gaussian stored for that state) and
how it is fitted after each world-model step. `LearnedPrior` is PO-MPC's adaptive prior: a
Gaussian policy network distilled from the stored planner Gaussians by reverse (Eq. 12) or
forward (Eq. 13) KL. `ReplayPrior` is the stored planner Gaussian itself (BMPC; paper Fig. 7's
"no learned prior"). A new prior is a new final registered in `PRIORS` under the name that
`--prior` selects (see docs/extending.md).
"""

import abc
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Key

from .buffer import Batch
from .config import AgentConfig, LossConfig
from .distributions import AbstractActionDist
from .losses import Metrics, planner_gaussian, prior_fit_loss
from .math import RunningScale
from .networks import adam_with_clip, vmap2
from .world_model import PolicyNet, make_policy_net


class AbstractPrior(eqx.Module):
    """pi_p: a distribution over actions at each latent state, and how it is fitted."""

    @abc.abstractmethod
    def __call__(
        self,
        z: Float[Array, " latent"],
        plan_mean: Float[Array, " action"],
        plan_std: Float[Array, " action"],
    ) -> AbstractActionDist:
        """pi_p at one latent state whose stored planner Gaussian is N(plan_mean, plan_std).

        This is what enters the KL of the policy loss (Eq. 18) at z_t and of the Q^lambda
        target (Eq. 17) at z_{t+1}."""

    @abc.abstractmethod
    def fit(
        self,
        zs: Float[Array, "horizon batch latent"],
        batch: Batch,
        loss: LossConfig,
        *,
        key: Key[Array, ""],
    ) -> tuple["AbstractPrior", Metrics]:
        """One fitting step toward the planner Gaussians stored for z_0..z_{H-1} (detached
        rollout latents). Skipped (with NaN metrics) during the pretraining burst.

        **Returns:** the fitted prior and its metrics (empty when nothing is fitted)."""

    @abc.abstractmethod
    def scale_value(self) -> Float[Array, ""]:
        """The running scale S_p of the fit (1 when nothing is fitted), logged as `s_p`."""

    def dists(
        self,
        zs: Float[Array, "t b latent"],
        plan_mean: Float[Array, "t b action"],
        plan_std: Float[Array, "t b action"],
    ) -> AbstractActionDist:
        """pi_p at a (time, batch) grid of latents."""
        return vmap2(self.__call__)(zs, plan_mean, plan_std)


class LearnedPrior(AbstractPrior):
    """The adaptive prior of PO-MPC: a Gaussian policy network fitted by Adam (own clip)."""

    net: PolicyNet
    opt_state: optax.OptState
    scale: RunningScale
    """S_p of Eqs. 12-13."""
    direction: Literal["reverse", "forward"] = eqx.field(static=True)
    """reverse: KL[pi_p || pi_P] (Eq. 12, mode seeking); forward: KL[pi_P || pi_p] (Eq. 13)."""
    optimizer: optax.GradientTransformation = eqx.field(static=True)

    def __call__(self, z, plan_mean, plan_std) -> AbstractActionDist:
        return self.net(z)

    def fit(self, zs, batch, loss, *, key) -> tuple[AbstractPrior, Metrics]:
        (_, (scale, metrics)), grads = eqx.filter_value_and_grad(learned_prior_loss, has_aux=True)(
            self.net, zs, batch, self.direction, self.scale, loss, key
        )
        metrics["prior_grad_norm"] = optax.global_norm(grads)
        params = eqx.filter(self.net, eqx.is_inexact_array)
        updates, opt_state = self.optimizer.update(grads, self.opt_state, params)
        net = eqx.apply_updates(self.net, updates)
        return LearnedPrior(net, opt_state, scale, self.direction, self.optimizer), metrics

    def scale_value(self) -> Float[Array, ""]:
        return self.scale.value


def learned_prior_loss(
    net: PolicyNet,
    zs: Float[Array, "horizon batch latent"],
    batch: Batch,
    direction: Literal["reverse", "forward"],
    scale: RunningScale,
    loss: LossConfig,
    key: Key[Array, ""],
) -> tuple[Float[Array, ""], tuple[RunningScale, Metrics]]:
    """Eq. 12 or 13 for a prior network at latents z_0..z_{H-1} and their stored planner
    Gaussians (see `losses.prior_fit_loss`)."""
    h = zs.shape[0]
    planner = vmap2(planner_gaussian)(batch.plan_mean[:h], batch.plan_std[:h])
    return prior_fit_loss(vmap2(net)(zs), planner, direction, scale, loss, key)


class ReplayPrior(AbstractPrior):
    """The stored planner Gaussian N(a_bar, sigma) itself (BMPC): nothing to fit."""

    def __call__(self, z, plan_mean, plan_std) -> AbstractActionDist:
        return planner_gaussian(plan_mean, plan_std)

    def fit(self, zs, batch, loss, *, key) -> tuple[AbstractPrior, Metrics]:
        return self, {}

    def scale_value(self) -> Float[Array, ""]:
        return jnp.ones((), jnp.float32)


def make_learned_prior(cfg: AgentConfig, *, key: Key[Array, ""]) -> AbstractPrior:
    o = cfg.optim
    net = make_policy_net(cfg, key=key)
    optimizer = adam_with_clip(o.lr, o.grad_clip, o.policy_eps)
    opt_state = optimizer.init(eqx.filter(net, eqx.is_inexact_array))
    return LearnedPrior(net, opt_state, RunningScale.init(), cfg.prior_loss, optimizer)


def make_replay_prior(cfg: AgentConfig, *, key: Key[Array, ""]) -> AbstractPrior:
    return ReplayPrior()


PriorBuilder = Callable[..., AbstractPrior]
"""`builder(cfg: AgentConfig, *, key) -> AbstractPrior`."""

PRIORS: dict[str, PriorBuilder] = {"learned": make_learned_prior, "replay": make_replay_prior}
"""`--prior NAME` -> the builder of that prior. Register a new prior by adding an entry."""


def make_prior(cfg: AgentConfig, *, key: Key[Array, ""]) -> AbstractPrior:
    if cfg.prior not in PRIORS:
        raise ValueError(f"unknown prior {cfg.prior!r}; registered priors: {', '.join(PRIORS)}")
    return PRIORS[cfg.prior](cfg, key=key)
