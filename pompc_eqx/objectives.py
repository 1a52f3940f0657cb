"""The sampling policy's objective in the paper's three lambda regimes (Eq. 18 and its limits).

- `MaxQ` (lambda = 0, TD-MPC2): maximise Q with an entropy bonus.
- `KLRegularized` (0 < lambda < inf, PO-MPC): Eq. 18 with the KL-regularised Q^lambda, whose
  ensemble (Eq. 16, target Eq. 17) this objective owns and trains with the world model.
- `KLOnly` (lambda = inf, BMPC): match the prior (KL only, weight 1).

Each objective owns the modules it needs (Q^lambda, the prior, lambda, the running scales S_Q
and S_KL) and says how the sampling policy's loss, the extra critic's loss and target, and the
prior's fit are computed; the update in `agent.py` calls these methods and nothing else.
"""

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key, PyTree

from .buffer import Batch
from .config import AgentConfig, LossConfig
from .distributions import AbstractActionDist
from .lam import AbstractLambda, make_lambda
from .losses import (
    Metrics,
    draw_policy,
    ensemble_ce,
    kl2,
    policy_kl,
    policy_q,
    soft_td_target,
    weighted_over_time,
)
from .math import RunningScale, TwoHot
from .networks import Ensemble, polyak, tree_copy
from .priors import AbstractPrior, make_prior
from .world_model import Networks, PolicyNet, make_q_ensemble, pair_min


PolicyLoss = tuple[Float[Array, ""], tuple["AbstractPolicyObjective", Metrics]]


def _const(x: float) -> Float[Array, ""]:
    return jnp.asarray(x, jnp.float32)


class AbstractPolicyObjective(eqx.Module):
    """How the sampling policy pi_s is trained, and the extra modules that takes."""

    reads_planner_gaussians: eqx.AbstractClassVar[bool]
    """Whether the loss reads the stored planner Gaussians (then lazy reanalyze refreshes them)."""

    @abc.abstractmethod
    def critic(self) -> PyTree:
        """The extra critic trained with the world model (Q^lambda, Eq. 16), or None."""

    @abc.abstractmethod
    def with_critic(self, critic: PyTree) -> "AbstractPolicyObjective":
        """This objective with its extra critic replaced (after the world-model step)."""

    @abc.abstractmethod
    def critic_target(
        self,
        two_hot: TwoHot,
        policy_next: AbstractActionDist,
        z_next: Float[Array, "horizon batch latent"],
        a_next: Float[Array, "horizon batch action"],
        batch: Batch,
        bootstrap: Float[Array, "horizon batch"],
        loss: LossConfig,
        *,
        pair_key: Key[Array, ""],
        kl_key: Key[Array, ""],
    ) -> PyTree:
        """The extra critic's TD target (Eq. 17) at z' = h(o_{t+1}), a~ ~ pi_s(z'), or None."""

    @abc.abstractmethod
    def critic_loss(
        self,
        critic: PyTree,
        two_hot: TwoHot,
        za: Float[Array, "horizon batch za"],
        target: PyTree,
        weights: Float[Array, " horizon"],
        loss: LossConfig,
        *,
        key: Key[Array, ""],
    ) -> tuple[Float[Array, ""], Metrics]:
        """The extra critic's weighted loss, added to the world-model loss (0 without one)."""

    @abc.abstractmethod
    def fit_prior(
        self,
        zs: Float[Array, "horizon batch latent"],
        batch: Batch,
        loss: LossConfig,
        *,
        key: Key[Array, ""],
    ) -> tuple["AbstractPolicyObjective", Metrics]:
        """Fit the prior, if this objective has one that is fitted (Eqs. 12-13)."""

    @abc.abstractmethod
    def policy_loss(
        self,
        policy: PolicyNet,
        nets: Networks,
        zs: Float[Array, "time batch latent"],
        batch: Batch,
        loss: LossConfig,
        *,
        key: Key[Array, ""],
    ) -> PolicyLoss:
        """The sampling policy's loss at latents z_0..z_{n-1}, differentiated w.r.t. `policy`.

        **Returns:** the loss and, as auxiliary output, this objective with its running scales
        (and lambda) updated, and the loss terms as metrics."""

    @abc.abstractmethod
    def update_targets(self, tau: float) -> "AbstractPolicyObjective":
        """Polyak-average the extra critic's target network, if any."""

    @abc.abstractmethod
    def report(self) -> Metrics:
        """`s_q`, `s_kl`, `s_p` and `lam` (1, 1, 1 and lambda's value where a term is absent)."""


class AbstractObjectiveWithoutCritic(AbstractPolicyObjective):
    """The extra-critic methods of objectives that train no critic beyond Q."""

    def critic(self) -> PyTree:
        return None

    def with_critic(self, critic: PyTree) -> AbstractPolicyObjective:
        return self

    def critic_target(
        self, two_hot, policy_next, z_next, a_next, batch, bootstrap, loss, *, pair_key, kl_key
    ):
        return None

    def critic_loss(self, critic, two_hot, za, target, weights, loss, *, key):
        return jnp.zeros(()), {}

    def update_targets(self, tau: float) -> AbstractPolicyObjective:
        return self


class MaxQ(AbstractObjectiveWithoutCritic):
    """lambda = 0 (TD-MPC2): sum_t rho^t/n mean_B[-Q(z_t, a_t)/S_Q - alpha H(pi_s)(z_t)]."""

    scale_q: RunningScale
    reads_planner_gaussians: ClassVar[bool] = False

    def fit_prior(self, zs, batch, loss, *, key) -> tuple[AbstractPolicyObjective, Metrics]:
        return self, {}

    def policy_loss(self, policy, nets, zs, batch, loss, *, key) -> PolicyLoss:
        draw = draw_policy(policy, zs, key=key)
        q = policy_q(draw, nets.value.heads, nets.two_hot, zs)
        scale_q = self.scale_q.update(q[0], loss.scale_tau)
        per_step = -loss.entropy_coef * draw.scaled_entropy - q / scale_q.value
        value = weighted_over_time(per_step, loss.rho)
        metrics = {**draw.metrics(), "pi_q": jnp.mean(q), "pi_loss": value}
        return value, (MaxQ(scale_q), metrics)

    def report(self) -> Metrics:
        return {
            "s_q": self.scale_q.value,
            "s_kl": _const(1.0),
            "s_p": _const(1.0),
            "lam": _const(0.0),
        }


class KLOnly(AbstractObjectiveWithoutCritic):
    """lambda = inf (BMPC): sum_t rho^t/n mean_B[KL(pi_s || pi_p)(z_t)/S_KL - alpha H(pi_s)(z_t)]."""

    prior: AbstractPrior
    scale_kl: RunningScale
    reads_planner_gaussians: ClassVar[bool] = True

    def fit_prior(self, zs, batch, loss, *, key) -> tuple[AbstractPolicyObjective, Metrics]:
        prior, metrics = self.prior.fit(zs, batch, loss, key=key)
        return KLOnly(prior, self.scale_kl), metrics

    def policy_loss(self, policy, nets, zs, batch, loss, *, key) -> PolicyLoss:
        n = zs.shape[0]
        draw = draw_policy(policy, zs, key=key)
        prior = self.prior.dists(zs, batch.plan_mean[:n], batch.plan_std[:n])
        kl, kl_metrics = policy_kl(draw, prior, loss.kl_reduction)
        scale_kl = self.scale_kl.update(kl[0], loss.scale_tau)
        per_step = -loss.entropy_coef * draw.scaled_entropy + kl / scale_kl.value
        value = weighted_over_time(per_step, loss.rho)
        metrics = {**draw.metrics(), **kl_metrics, "pi_loss": value}
        return value, (KLOnly(self.prior, scale_kl), metrics)

    def report(self) -> Metrics:
        return {
            "s_q": _const(1.0),
            "s_kl": self.scale_kl.value,
            "s_p": self.prior.scale_value(),
            "lam": _const(math.inf),
        }


class KLRegularized(AbstractPolicyObjective):
    """0 < lambda < inf (PO-MPC, Eq. 18):
    sum_t rho^t/n mean_B[lambda KL(pi_s || pi_p)/S_KL - Q^lambda/S_Q - alpha H(pi_s)],
    with Q^lambda trained by Eq. 16 toward the target of Eq. 17."""

    qlam: Ensemble
    target_qlam: Ensemble
    prior: AbstractPrior
    lam: AbstractLambda
    scale_q: RunningScale
    scale_kl: RunningScale
    reads_planner_gaussians: ClassVar[bool] = True

    def critic(self) -> PyTree:
        return self.qlam

    def with_critic(self, critic: PyTree) -> AbstractPolicyObjective:
        return eqx.tree_at(lambda o: o.qlam, self, critic)

    def critic_target(
        self, two_hot, policy_next, z_next, a_next, batch, bootstrap, loss, *, pair_key, kl_key
    ):
        prior = self.prior.dists(z_next, batch.plan_mean[1:], batch.plan_std[1:])
        kl = kl2(policy_next, prior, loss.kl_reduction, kl_key)
        soft_q = pair_min(self.target_qlam, two_hot, z_next, a_next, pair_key)
        return soft_td_target(batch.reward, bootstrap, soft_q, kl, self.lam.value(), self.scale_kl)

    def critic_loss(self, critic, two_hot, za, target, weights, loss, *, key):
        qlam_loss = ensemble_ce(critic, two_hot, za, target, weights, key)  # Eq. 16
        return loss.qlam_coef * qlam_loss, {"qlam_loss": qlam_loss}

    def fit_prior(self, zs, batch, loss, *, key) -> tuple[AbstractPolicyObjective, Metrics]:
        prior, metrics = self.prior.fit(zs, batch, loss, key=key)
        return eqx.tree_at(lambda o: o.prior, self, prior), metrics

    def policy_loss(self, policy, nets, zs, batch, loss, *, key) -> PolicyLoss:
        n = zs.shape[0]
        draw = draw_policy(policy, zs, key=key)
        q = policy_q(draw, self.qlam, nets.two_hot, zs)
        scale_q = self.scale_q.update(q[0], loss.scale_tau)
        prior = self.prior.dists(zs, batch.plan_mean[:n], batch.plan_std[:n])
        kl, kl_metrics = policy_kl(draw, prior, loss.kl_reduction)
        scale_kl = self.scale_kl.update(kl[0], loss.scale_tau)
        per_step = -loss.entropy_coef * draw.scaled_entropy - q / scale_q.value
        per_step = per_step + self.lam.value() * kl / scale_kl.value
        value = weighted_over_time(per_step, loss.rho)
        metrics = {**draw.metrics(), "pi_q": jnp.mean(q), **kl_metrics, "pi_loss": value}
        lam = self.lam.update(jax.lax.stop_gradient(metrics["kl_mean"]))
        new = eqx.tree_at(lambda o: (o.scale_q, o.scale_kl, o.lam), self, (scale_q, scale_kl, lam))
        return value, (new, metrics)

    def update_targets(self, tau: float) -> AbstractPolicyObjective:
        return eqx.tree_at(lambda o: o.target_qlam, self, polyak(self.qlam, self.target_qlam, tau))

    def report(self) -> Metrics:
        return {
            "s_q": self.scale_q.value,
            "s_kl": self.scale_kl.value,
            "s_p": self.prior.scale_value(),
            "lam": self.lam.value(),
        }


def make_objective(
    cfg: AgentConfig, *, critic_key: Key[Array, ""], prior_key: Key[Array, ""]
) -> AbstractPolicyObjective:
    """The objective of `cfg.lam` (see `objective_class`), freshly initialised."""
    kind, one = objective_class(cfg), RunningScale.init
    if kind is MaxQ:
        return MaxQ(one())
    prior = make_prior(cfg, key=prior_key)
    if kind is KLOnly:
        return KLOnly(prior, one())
    qlam = make_q_ensemble(cfg, key=critic_key)
    return KLRegularized(qlam, tree_copy(qlam), prior, make_lambda(cfg), one(), one())


def objective_class(cfg: AgentConfig) -> type[AbstractPolicyObjective]:
    """lambda = 0 -> MaxQ, lambda = inf -> KLOnly, anything else (or auto) -> KLRegularized."""
    if cfg.lam == 0:
        return MaxQ
    return KLOnly if cfg.lam != "auto" and math.isinf(cfg.lam) else KLRegularized
