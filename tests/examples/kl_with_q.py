"""A new policy objective in one file: Eq. 18 scored by the ordinary Q instead of Q^lambda.

sum_t rho^t/n mean_B[lambda KL(pi_s || pi_p)/S_KL - Q(z_t, a_t)/S_Q - alpha H(pi_s)]: the
KL-regularised policy loss without the second, KL-regularised critic (an ablation of PO-MPC's
Eq. 16-17). It trains no extra critic, so it reuses `AbstractObjectiveWithoutCritic`.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from pompc_eqx.losses import draw_policy, policy_kl, policy_q, weighted_over_time
from pompc_eqx.math import RunningScale
from pompc_eqx.objectives import AbstractObjectiveWithoutCritic
from pompc_eqx.priors import AbstractPrior


class KLWithQ(AbstractObjectiveWithoutCritic):
    prior: AbstractPrior
    scale_q: RunningScale
    scale_kl: RunningScale
    lam: float = eqx.field(static=True)
    reads_planner_gaussians: ClassVar[bool] = True

    def fit_prior(self, zs, batch, loss, *, key):
        prior, metrics = self.prior.fit(zs, batch, loss, key=key)
        return eqx.tree_at(lambda o: o.prior, self, prior), metrics

    def policy_loss(self, policy, nets, zs, batch, loss, *, key):
        n = zs.shape[0]
        draw = draw_policy(policy, zs, key=key)
        q = policy_q(draw, nets.value.heads, nets.two_hot, zs)
        prior = self.prior.dists(zs, batch.plan_mean[:n], batch.plan_std[:n])
        kl, kl_metrics = policy_kl(draw, prior, loss.kl_reduction)
        scale_q = self.scale_q.update(q[0], loss.scale_tau)
        scale_kl = self.scale_kl.update(kl[0], loss.scale_tau)
        per_step = -loss.entropy_coef * draw.scaled_entropy - q / scale_q.value
        per_step = per_step + self.lam * kl / scale_kl.value
        value = weighted_over_time(per_step, loss.rho)
        metrics = {**draw.metrics(), "pi_q": jnp.mean(q), **kl_metrics, "pi_loss": value}
        new = eqx.tree_at(lambda o: (o.scale_q, o.scale_kl), self, (scale_q, scale_kl))
        return value, (new, metrics)

    def report(self):
        return {
            "s_q": self.scale_q.value,
            "s_kl": self.scale_kl.value,
            "s_p": self.prior.scale_value(),
            "lam": jnp.asarray(self.lam, jnp.float32),
        }
