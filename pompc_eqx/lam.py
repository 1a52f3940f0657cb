"""The KL weight lambda of Eqs. 17-18 as a swappable module.

`FixedLambda` is the paper's hyperparameter (0 = TD-MPC2, inf = BMPC, anything between =
PO-MPC). `DualLambda` goes beyond the paper (its future-work item): lambda becomes a dual
variable that keeps KL(pi_s || pi_p) near a target, the way SAC tunes its temperature.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from .config import AgentConfig


class AbstractLambda(eqx.Module):
    """lambda and how it changes after each policy update."""

    @abc.abstractmethod
    def value(self) -> Float[Array, ""]:
        """The current lambda (no gradient flows through it)."""

    @abc.abstractmethod
    def update(self, kl: Float[Array, ""]) -> "AbstractLambda":
        """Adapt lambda to the measured mean KL(pi_s || pi_p) of the last policy update."""

    @abc.abstractmethod
    def swept(self, value: Float[Array, ""]) -> "AbstractLambda":
        """This lambda with its swept hyperparameter set to `value`: an array, so that the
        runs of a sweep (`pompc_eqx.sweep`) share one compiled program."""


class FixedLambda(AbstractLambda):
    lam: Float[Array, ""]  # an array, not a static field: a lambda sweep batches it

    def __init__(self, lam: float | Float[Array, ""]):
        self.lam = jnp.asarray(lam, jnp.float32)

    def value(self) -> Float[Array, ""]:
        return self.lam

    def update(self, kl: Float[Array, ""]) -> AbstractLambda:
        return self

    def swept(self, value: Float[Array, ""]) -> AbstractLambda:
        return FixedLambda(value)


class DualLambda(AbstractLambda):
    """Dual ascent on log(lambda) for the constraint KL(pi_s || pi_p) <= kl_target.

    The Lagrangian's lambda-part is log(lambda) * (kl_target - KL); one Adam step on it per
    update raises lambda while the policy strays further than the target from its prior and
    lowers it otherwise (SAC's temperature rule with KL in place of -entropy).
    """

    log_lam: Float[Array, ""]
    opt_state: optax.OptState
    kl_target: Float[Array, ""]  # the swept value of a `--lam auto` sweep
    lr: float = eqx.field(static=True)

    def __init__(self, lam_init: float, kl_target: float | Float[Array, ""], lr: float):
        self.log_lam = jnp.log(jnp.asarray(lam_init, jnp.float32))
        self.opt_state = optax.adam(lr).init(self.log_lam)
        self.kl_target = jnp.asarray(kl_target, jnp.float32)
        self.lr = lr

    def value(self) -> Float[Array, ""]:
        return jnp.exp(self.log_lam)

    def update(self, kl: Float[Array, ""]) -> AbstractLambda:
        grad = self.kl_target - kl  # d/d(log lambda) of log(lambda) * (kl_target - KL)
        step, opt_state = optax.adam(self.lr).update(grad, self.opt_state, self.log_lam)
        return eqx.tree_at(
            lambda d: (d.log_lam, d.opt_state), self, (self.log_lam + step, opt_state)
        )

    def swept(self, value: Float[Array, ""]) -> AbstractLambda:
        return eqx.tree_at(lambda d: d.kl_target, self, jnp.asarray(value, jnp.float32))


def make_lambda(cfg: AgentConfig) -> AbstractLambda:
    if cfg.lam == "auto":
        return DualLambda(cfg.loss.lam_init, cfg.loss.kl_target, cfg.loss.lam_lr)
    return FixedLambda(float(cfg.lam))
