"""The TD-MPC2 latent world model with PO-MPC's extra heads (spec §1).

`Networks` holds what the planner reads: encoder h, latent dynamics d, reward R, the
bootstrap Q ensemble and the sampling policy pi_s. The networks of the policy objective
(Q^lambda, the learned prior) belong to its module (`objectives.py`, `priors.py`).
"""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, Key, PyTree

from .config import AgentConfig
from .distributions import AbstractActionDist, AbstractDistFamily, make_family
from .math import TwoHot
from .networks import MLP, Ensemble, SimNorm, zero_last_layer


class PolicyNet(eqx.Module):
    """z -> (mean, raw log-std) -> a distribution of the configured family."""

    mlp: MLP
    family: AbstractDistFamily

    def __init__(
        self,
        latent_dim: int,
        mlp_dim: int,
        action_dim: int,
        family: AbstractDistFamily,
        *,
        key: Key[Array, ""],
    ):
        self.mlp = MLP(latent_dim, (mlp_dim, mlp_dim), 2 * action_dim, key=key)
        self.family = family

    @property
    def action_dim(self) -> int:
        return self.mlp.out.bias.shape[-1] // 2

    def __call__(self, z: Float[Array, " latent"]) -> AbstractActionDist:
        mean, raw_log_std = jnp.split(self.mlp(z), 2)
        return self.family(mean, raw_log_std)

    def with_log_std_bounds(self, low: float, high: float) -> "PolicyNet":
        """The same weights with the raw log-std squashed into [low, high] instead."""
        family = dataclasses.replace(self.family, log_std_min=low, log_std_max=high)
        return eqx.tree_at(lambda p: p.family, self, family)


def make_q_ensemble(cfg: AgentConfig, *, key: Key[Array, ""]) -> Ensemble:
    m = cfg.model

    def head(k: Key[Array, ""]) -> MLP:
        mlp = MLP(
            m.latent_dim + cfg.action_dim,
            (m.mlp_dim, m.mlp_dim),
            m.num_bins,
            dropout=m.dropout,
            key=k,
        )
        return zero_last_layer(mlp)

    return Ensemble(head, m.num_q, key=key)


def ensemble_values(
    ensemble: Ensemble,
    two_hot: TwoHot,
    z: Float[Array, " latent"],
    a: Float[Array, " action"],
    *,
    key: Key[Array, ""] | None = None,
) -> Float[Array, " member"]:
    """Scalar value of every member (dropout only when a key is given)."""
    logits = ensemble(jnp.concatenate([z, a]), key=key)
    return jax.vmap(two_hot.decode)(logits)


def random_pair(key: Key[Array, ""], num_members: int) -> Int[Array, " 2"]:
    """Two distinct member indices (TD-MPC2 draws one pair per call, shared by the batch)."""
    return jr.choice(key, num_members, (2,), replace=False)


class Networks(eqx.Module):
    """The world model and the sampling policy of one seed (unbatched)."""

    encoder: MLP
    dynamics: MLP
    reward: MLP
    q: Ensemble
    policy: PolicyNet
    two_hot: TwoHot

    def encode(self, obs: Float[Array, " obs"]) -> Float[Array, " latent"]:
        return self.encoder(obs)

    def next(
        self, z: Float[Array, " latent"], a: Float[Array, " action"]
    ) -> Float[Array, " latent"]:
        return self.dynamics(jnp.concatenate([z, a]))

    def reward_logits(
        self, z: Float[Array, " latent"], a: Float[Array, " action"]
    ) -> Float[Array, " bins"]:
        return self.reward(jnp.concatenate([z, a]))

    def reward_value(
        self, z: Float[Array, " latent"], a: Float[Array, " action"]
    ) -> Float[Array, ""]:
        return self.two_hot.decode(self.reward_logits(z, a))


INIT_KEYS = ("encoder", "dynamics", "reward", "q", "critic", "policy", "prior")
"""The parts of an agent initialised from one key, in the order of `jr.split(key, 7)`."""


def init_keys(key: Key[Array, ""]) -> dict[str, Key[Array, ""]]:
    """One key per initialised part (`INIT_KEYS`): the same key gives the same networks."""
    return dict(zip(INIT_KEYS, jr.split(key, len(INIT_KEYS))))


def make_networks(cfg: AgentConfig, *, key: Key[Array, ""]) -> Networks:
    """Build and initialise the networks as TD-MPC2 does (zero last layer of R and Q)."""
    m = cfg.model
    if m.latent_dim % m.simnorm_dim:
        raise ValueError(
            f"latent_dim {m.latent_dim} must be a multiple of simnorm_dim {m.simnorm_dim}"
        )
    keys = init_keys(key)
    simnorm = SimNorm(m.simnorm_dim)
    enc_hidden = (m.enc_dim,) * max(m.num_enc_layers - 1, 1)
    za_dim = m.latent_dim + cfg.action_dim
    return Networks(
        encoder=MLP(cfg.obs_dim, enc_hidden, m.latent_dim, simnorm, key=keys["encoder"]),
        dynamics=MLP(za_dim, (m.mlp_dim, m.mlp_dim), m.latent_dim, simnorm, key=keys["dynamics"]),
        reward=zero_last_layer(MLP(za_dim, (m.mlp_dim, m.mlp_dim), m.num_bins, key=keys["reward"])),
        q=make_q_ensemble(cfg, key=keys["q"]),
        policy=make_policy_net(cfg, key=keys["policy"]),
        two_hot=TwoHot(m.num_bins, m.vmin, m.vmax),
    )


def make_policy_net(cfg: AgentConfig, *, key: Key[Array, ""]) -> PolicyNet:
    """A Gaussian policy network of the configured family (the sampling policy, a learned prior)."""
    m = cfg.model
    return PolicyNet(m.latent_dim, m.mlp_dim, cfg.action_dim, make_family(cfg.policy), key=key)


def count_params(tree: PyTree) -> int:
    """Number of floating-point parameters in a PyTree (arrays or `jax.ShapeDtypeStruct`s)."""

    def is_param(x) -> bool:
        return (eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)) and jnp.issubdtype(
            x.dtype, jnp.inexact
        )

    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if is_param(x))
