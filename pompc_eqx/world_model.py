"""The TD-MPC2 latent world model with PO-MPC's extra heads (spec §1).

`Networks` holds what the planner reads: encoder h, latent dynamics d, reward R, the value
function (TD-MPC2's Q ensemble or BMPC's V ensemble) and the sampling policy pi_s. The networks of the policy objective
(Q^lambda, the learned prior) belong to its module (`objectives.py`, `priors.py`).
"""

import abc
import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, Key, PyTree

from .buffer import Batch
from .config import AgentConfig
from .distributions import AbstractActionDist, AbstractDistFamily, make_family
from .math import TwoHot
from .networks import MLP, Ensemble, SimNorm, keys2, vmap2, zero_last_layer
from .termination import AbstractTermination, make_termination


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


def make_q_ensemble(
    cfg: AgentConfig, *, key: Key[Array, ""], input_dim: int | None = None
) -> Ensemble:
    """`num_q` value heads (dropout on the first layer, zero last layer) over (z, a), or over
    `input_dim` inputs."""
    m = cfg.model
    in_dim = m.latent_dim + cfg.action_dim if input_dim is None else input_dim

    def head(k: Key[Array, ""]) -> MLP:
        mlp = MLP(in_dim, (m.mlp_dim, m.mlp_dim), m.num_bins, dropout=m.dropout, key=k)
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
    """Scalar value of every member of a Q(z, a) ensemble (dropout only when a key is given)."""
    logits = ensemble(jnp.concatenate([z, a]), key=key)
    return jax.vmap(two_hot.decode)(logits)


def random_pair(key: Key[Array, ""], num_members: int) -> Int[Array, " 2"]:
    """Two distinct member indices (TD-MPC2 draws one pair per call, shared by the batch)."""
    return jr.choice(key, num_members, (2,), replace=False)


def pair_min(
    target: Ensemble,
    two_hot: TwoHot,
    z: Float[Array, "t b latent"],
    a: Float[Array, "t b action"],
    key: Key[Array, ""],
) -> Float[Array, "t b"]:
    """min over a random pair of (target) Q heads, no dropout: the bootstrap of Eqs. 15, 17."""
    pair = target.subset(random_pair(key, target.num_members))
    return vmap2(lambda zz, aa: jnp.min(ensemble_values(pair, two_hot, zz, aa)))(z, a)


class AbstractValueFunction(eqx.Module):
    """The world model's value function: what MPPI bootstraps with (Eq. 10) and what the value
    loss (Eq. 14) trains toward its TD target (Eq. 15)."""

    heads: eqx.AbstractVar[Ensemble]

    @abc.abstractmethod
    def inputs(
        self, z: Float[Array, " latent"], a: Float[Array, " action"]
    ) -> Float[Array, " inputs"]:
        """What the heads read at a latent state and action."""

    @abc.abstractmethod
    def bootstrap(
        self, nets: "Networks", z: Float[Array, "sample latent"], *, key: Key[Array, ""]
    ) -> Float[Array, " sample"]:
        """The value at the last latents of imagined trajectories (Eq. 10's gamma^H term)."""

    @abc.abstractmethod
    def td_target(
        self,
        nets: "Networks",
        batch: Batch,
        z_next: Float[Array, "horizon batch latent"],
        a_next: Float[Array, "horizon batch action"],
        bootstrap: Float[Array, "horizon batch"],
        *,
        key: Key[Array, ""],
    ) -> Float[Array, "horizon batch"]:
        """The TD target of the value loss, computed with this (target) value function and the
        online networks `nets`; `a_next ~ pi_s(z_next)`, `bootstrap = gamma (1 - terminated)`."""

    def estimate(
        self, two_hot: TwoHot, z: Float[Array, " latent"], a: Float[Array, " action"]
    ) -> Float[Array, ""]:
        """The mean of every head at a latent state and action (no dropout): the value the
        run logs next to the realised discounted return (`q_estimate`)."""
        return jnp.mean(jax.vmap(two_hot.decode)(self.heads(self.inputs(z, a))))


class QFunction(AbstractValueFunction):
    """TD-MPC2's Q(z, a) ensemble: bootstrap with a random pair's mean at a~ ~ pi_s(z_H), TD
    target r + gamma (1 - term) min_pair Qbar(z', a~) (Eq. 15)."""

    heads: Ensemble

    def inputs(self, z, a) -> Float[Array, " inputs"]:
        return jnp.concatenate([z, a])

    def bootstrap(self, nets, z, *, key) -> Float[Array, " sample"]:
        num = z.shape[0]
        pi_key, pair_key = jr.split(key)
        a = jax.vmap(lambda zz, k: nets.policy(zz).sample(key=k))(z, jr.split(pi_key, num))
        pair = self.heads.subset(random_pair(pair_key, self.heads.num_members))
        return jax.vmap(lambda zz, aa: jnp.mean(ensemble_values(pair, nets.two_hot, zz, aa)))(z, a)

    def td_target(
        self, nets, batch, z_next, a_next, bootstrap, *, key
    ) -> Float[Array, "horizon batch"]:
        return batch.reward + bootstrap * pair_min(self.heads, nets.two_hot, z_next, a_next, key)


class VFunction(AbstractValueFunction):
    """BMPC's state value V(z) ensemble (its repository's default, `use_v_instead_q`): bootstrap
    with the mean of all heads at z_H; a one-step model-based TD target on the encoded real
    latents z_t = h(o_t), t < H: r^(z_t, a) + gamma avg_k Vbar_k(d(z_t, a)), a ~ pi_s(z_t),
    with the predicted reward r^ (BMPC's `td_horizon: 1`)."""

    heads: Ensemble

    def inputs(self, z, a) -> Float[Array, " inputs"]:
        return z

    def mean_value(self, two_hot: TwoHot, z: Float[Array, " latent"]) -> Float[Array, ""]:
        return jnp.mean(jax.vmap(two_hot.decode)(self.heads(z)))

    def bootstrap(self, nets, z, *, key) -> Float[Array, " sample"]:
        return jax.vmap(lambda zz: self.mean_value(nets.two_hot, zz))(z)

    def td_target(
        self, nets, batch, z_next, a_next, bootstrap, *, key
    ) -> Float[Array, "horizon batch"]:
        h, b = batch.reward.shape
        z = vmap2(nets.encode)(batch.obs[:-1])
        a = vmap2(lambda zz, k: nets.policy(zz).sample(key=k))(z, keys2(key, h, b))
        reward = vmap2(nets.reward_value)(z, a)
        value = vmap2(lambda zz, aa: self.mean_value(nets.two_hot, nets.next(zz, aa)))(z, a)
        return reward + bootstrap * value


def make_value_function(cfg: AgentConfig, *, key: Key[Array, ""]) -> AbstractValueFunction:
    """`--model.value q` (TD-MPC2) or `v` (BMPC's repository)."""
    if cfg.model.value == "v":
        return VFunction(make_q_ensemble(cfg, key=key, input_dim=cfg.model.latent_dim))
    return QFunction(make_q_ensemble(cfg, key=key))


class Networks(eqx.Module):
    """The world model and the sampling policy of one seed (unbatched)."""

    encoder: MLP
    dynamics: MLP
    reward: MLP
    value: AbstractValueFunction
    policy: PolicyNet
    termination: AbstractTermination
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


INIT_KEYS = ("encoder", "dynamics", "reward", "value", "critic", "policy", "prior")
"""The parts of an agent initialised from one key, in the order of `jr.split(key, 7)`."""


def init_keys(key: Key[Array, ""]) -> dict[str, Key[Array, ""]]:
    """One key per initialised part (`INIT_KEYS`, plus `termination` folded in separately, so
    that adding it changed no other part's key): the same key gives the same networks."""
    keys = dict(zip(INIT_KEYS, jr.split(key, len(INIT_KEYS))))
    return {**keys, "termination": jr.fold_in(key, len(INIT_KEYS))}


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
        value=make_value_function(cfg, key=keys["value"]),
        policy=make_policy_net(cfg, key=keys["policy"]),
        termination=make_termination(cfg, key=keys["termination"]),
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
