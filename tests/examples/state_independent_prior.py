"""A new prior in one file: one learned Gaussian for every state, pi_p(a | z) = N(tanh(m), e^s).

It is fitted by reverse KL (Eq. 12's direction) to the stored planner Gaussians, with its own
Adam. Importing this module registers it, so `TrainConfig(prior="state-independent")` (or
`--prior state-independent` in a script that imports it) trains PO-MPC with it. Nothing in the
losses, the objectives or the loop changes.
"""

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from pompc_eqx.config import AgentConfig
from pompc_eqx.distributions import AbstractActionDist, ClippedGaussian
from pompc_eqx.losses import kl2, planner_gaussian, weighted_over_time
from pompc_eqx.networks import adam_with_clip, vmap2
from pompc_eqx.priors import PRIORS, AbstractPrior


class StateIndependentPrior(AbstractPrior):
    mean: Float[Array, " action"]
    log_std: Float[Array, " action"]
    opt_state: optax.OptState
    optimizer: optax.GradientTransformation = eqx.field(static=True)

    def __call__(self, z, plan_mean, plan_std) -> AbstractActionDist:
        return ClippedGaussian(loc=jnp.tanh(self.mean), scale=jnp.exp(self.log_std))

    def fit(self, zs, batch, loss, *, key):
        h = zs.shape[0]
        planner = vmap2(planner_gaussian)(batch.plan_mean[:h], batch.plan_std[:h])

        def objective(params):
            prior = eqx.tree_at(lambda p: (p.mean, p.log_std), self, params)
            fitted = prior.dists(zs, batch.plan_mean[:h], batch.plan_std[:h])
            kl = kl2(fitted, planner, loss.kl_reduction, key)
            return weighted_over_time(kl, loss.rho), jnp.mean(kl)

        params = (self.mean, self.log_std)
        (value, kl), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, self.opt_state, params)
        mean, log_std = optax.apply_updates(params, updates)
        new = StateIndependentPrior(mean, jnp.clip(log_std, -3.0, 1.0), opt_state, self.optimizer)
        return new, {"prior_loss": value, "prior_kl": kl}

    def scale_value(self) -> Float[Array, ""]:
        return jnp.ones((), jnp.float32)


def make_state_independent_prior(cfg: AgentConfig, *, key) -> AbstractPrior:
    # Two numbers per action dimension: a larger step than the networks' 3e-4 suits them.
    optimizer = adam_with_clip(1e-2, cfg.optim.grad_clip)
    mean, log_std = jnp.zeros(cfg.action_dim), jnp.zeros(cfg.action_dim)
    return StateIndependentPrior(mean, log_std, optimizer.init((mean, log_std)), optimizer)


PRIORS["state-independent"] = make_state_independent_prior
