"""Whether an imagined trajectory has ended: TD-MPC2's termination head for episodic tasks.

With `--episodic` the world model learns p(terminated | z') by binary cross-entropy on the
stored terminations (coefficient 1, TD-MPC2); the planner (and so lazy reanalyze) stops adding
rewards and the bootstrap value once the predicted probability passes 0.5. Non-episodic tasks,
and `--episodic --model.no-termination-head` (stored terminations cut only the TD targets), use
`NeverTerminates`, which has no parameters and changes nothing.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Key

from .config import AgentConfig
from .networks import MLP, vmap2


class AbstractTermination(eqx.Module):
    @abc.abstractmethod
    def ended(self, z: Float[Array, " latent"]) -> Float[Array, ""]:
        """1 where an episode is predicted to have ended on reaching latent `z`, else 0."""

    @abc.abstractmethod
    def loss(
        self,
        z_next: Float[Array, "horizon batch latent"],
        terminated: Float[Array, "horizon batch"],
    ) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
        """The world-model loss term for the rollout latents z_1..z_H (0 when nothing is learned)."""


class NeverTerminates(AbstractTermination):
    """Non-episodic tasks: imagined trajectories never end."""

    def ended(self, z) -> Float[Array, ""]:
        return jnp.zeros(())

    def loss(self, z_next, terminated):
        return jnp.zeros(()), {}


class TerminationHead(AbstractTermination):
    """An MLP z -> logit of p(terminated), trained by binary cross-entropy (TD-MPC2 episodic)."""

    mlp: MLP

    def ended(self, z) -> Float[Array, ""]:
        return (jax.nn.sigmoid(self.mlp(z)[0]) > 0.5).astype(jnp.float32)

    def loss(self, z_next, terminated):
        logits = vmap2(lambda z: self.mlp(z)[0])(z_next)
        bce = jnp.mean(
            jnp.maximum(logits, 0) - logits * terminated + jnp.log1p(jnp.exp(-jnp.abs(logits)))
        )
        return bce, {"termination_loss": bce}


def make_termination(cfg: AgentConfig, *, key: Key[Array, ""]) -> AbstractTermination:
    if not (cfg.episodic and cfg.model.termination_head):
        return NeverTerminates()
    m = cfg.model
    return TerminationHead(MLP(m.latent_dim, (m.mlp_dim, m.mlp_dim), 1, key=key))
