"""The equations of the update, one function each (paper Eqs. 12-18, TD-MPC2's model loss).

Everything here acts on time-major `(t, b)` batches of one seed and is a pure function of its
arguments. Which terms a run uses is decided by the policy objective and the prior modules
(`objectives.py`, `priors.py`), which call these functions; nothing here branches on the method.
"""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Key

from .buffer import Batch
from .config import LossConfig
from .distributions import AbstractActionDist, ClippedGaussian, kl_divergence
from .math import RunningScale, TwoHot
from .networks import Ensemble, keys2, vmap2
from .world_model import Networks, PolicyNet, ensemble_values, random_pair


Metrics = dict[str, Float[Array, ""]]


def rho_weights(n: int, rho: float) -> Float[Array, " t"]:
    """rho^t / n: temporal weights, normalised by the number of terms (not by sum rho^t)."""
    return rho ** jnp.arange(n, dtype=jnp.float32) / n


def planner_gaussian(
    mean: Float[Array, " action"], std: Float[Array, " action"]
) -> AbstractActionDist:
    """A stored planner Gaussian N(a_bar, sigma) as an action distribution (BMPC)."""
    return ClippedGaussian(loc=mean, scale=std)


def kl2(
    p: AbstractActionDist,
    q: AbstractActionDist,
    reduction: Literal["sum", "mean"],
    key: Key[Array, ""],
) -> Float[Array, "t b"]:
    """KL(p || q) at every (t, b) entry of two batched distributions."""
    t, b = p.loc.shape[:2]
    fn = lambda pp, qq, k: kl_divergence(pp, qq, reduction=reduction, key=k)
    return vmap2(fn)(p, q, keys2(key, t, b))


def ensemble_ce(
    ensemble: Ensemble,
    two_hot: TwoHot,
    za: Float[Array, "t b za"],
    target: Float[Array, "t b"],
    weights: Float[Array, " t"],
    key: Key[Array, ""],
) -> Float[Array, ""]:
    """Two-hot cross-entropy of every head (dropout on), weighted rho^t/H, over H * heads.

    The value loss of TD-MPC2 (Q toward Eq. 15) and the Q^lambda loss of Eq. 16."""
    t, b = target.shape
    logits = vmap2(lambda x, kk: ensemble(x, key=kk))(za, keys2(key, t, b))  # (t, b, N, bins)
    per_head = jax.vmap(jax.vmap(jax.vmap(two_hot.cross_entropy, in_axes=(0, None))))(
        logits, target
    )
    return jnp.sum(weights * jnp.mean(jnp.sum(per_head, axis=-1), axis=1)) / ensemble.num_members


def world_model_loss(
    nets: Networks,
    batch: Batch,
    z_next: Float[Array, "horizon batch latent"],
    td: Float[Array, "horizon batch"],
    loss: LossConfig,
    *,
    key: Key[Array, ""],
) -> tuple[Float[Array, ""], Float[Array, "time batch latent"], Metrics]:
    """TD-MPC2's model loss: consistency (20), reward (0.1) and value (0.1, Eq. 14 toward Eq. 15), on
    the latent rollout z_{t+1} = d(z_t, a_t) from z_0 = h(o_0). `key` drives Q's dropout.

    **Returns:** the weighted sum, the rollout latents z_0..z_H and the unweighted terms."""
    h = batch.reward.shape[0]
    w = rho_weights(h, loss.rho)

    def step(z, a):
        z_next_pred = jax.vmap(nets.next)(z, a)
        return z_next_pred, z_next_pred

    z0 = jax.vmap(nets.encode)(batch.obs[0])
    _, z_pred = jax.lax.scan(step, z0, batch.action)
    zs = jnp.concatenate([z0[None], z_pred])  # (H+1, B, L)
    consistency = jnp.sum(w * jnp.mean((z_pred - z_next) ** 2, axis=(1, 2)))

    ce = nets.two_hot.cross_entropy
    reward_logits = vmap2(nets.reward_logits)(zs[:-1], batch.action)
    reward_loss = jnp.sum(w * jnp.mean(vmap2(ce)(reward_logits, batch.reward), axis=1))
    inputs = vmap2(nets.value.inputs)(zs[:-1], batch.action)
    value_loss = ensemble_ce(nets.value.heads, nets.two_hot, inputs, td, w, key)
    total = (
        loss.consistency_coef * consistency
        + loss.reward_coef * reward_loss
        + loss.value_coef * value_loss
    )
    # Episodic tasks: p(terminated | z_{t+1}) on the rollout latents (0 and no metric otherwise).
    termination_loss, termination_metrics = nets.termination.loss(z_pred, batch.terminated)
    total = total + loss.termination_coef * termination_loss
    metrics = {
        "consistency_loss": consistency,
        "reward_loss": reward_loss,
        "value_loss": value_loss,
        **termination_metrics,
    }
    return total, zs, metrics


def soft_td_target(
    reward: Float[Array, "horizon batch"],
    bootstrap: Float[Array, "horizon batch"],
    soft_q: Float[Array, "horizon batch"],
    kl: Float[Array, "horizon batch"],
    lam: Float[Array, ""],
    scale_kl: RunningScale,
) -> Float[Array, "horizon batch"]:
    """Eq. 17: r + gamma (1 - term) (Qbar^lambda(z', a~) - lambda KL[pi_s || pi_p](z') / S_KL)."""
    return reward + bootstrap * (soft_q - lam * (kl / scale_kl.value))


def prior_fit_loss(
    fitted: AbstractActionDist,
    planner: AbstractActionDist,
    direction: Literal["reverse", "forward"],
    scale: RunningScale,
    loss: LossConfig,
    key: Key[Array, ""],
) -> tuple[Float[Array, ""], tuple[RunningScale, Metrics]]:
    """Eq. 12 (reverse: KL[pi_p || pi_P]) or Eq. 13 (forward: KL[pi_P || pi_p]) over (t, b),
    weighted rho^t / H and divided by the running scale S_p (updated from row t = 0)."""
    if direction == "reverse":
        kl = kl2(fitted, planner, loss.kl_reduction, key)
    else:
        kl = kl2(planner, fitted, loss.kl_reduction, key)
    scale = scale.update(kl[0], loss.scale_tau)
    value = weighted_over_time(kl, loss.rho) / scale.value
    return value, (scale, {"prior_loss": value, "prior_kl": jnp.mean(kl)})


class PolicyDraw(eqx.Module):
    """pi_s at the policy latents with one reparameterised action per latent, and the keys of
    Eq. 18's other terms (key layout: sample, pair, dropout, kl = split(key, 4))."""

    dist: AbstractActionDist
    action: Float[Array, "t b action"]
    scaled_entropy: Float[Array, "t b"]
    """TD-MPC2's scaled entropy estimate at the sampled action (`sample_with_entropy`)."""
    pair_key: Key[Array, ""]
    dropout_key: Key[Array, ""]
    kl_key: Key[Array, ""]

    def metrics(self) -> Metrics:
        return {
            "pi_scaled_entropy": jnp.mean(self.scaled_entropy),
            "pi_entropy": jnp.mean(vmap2(lambda d: d.entropy())(self.dist)),
            "pi_std": jnp.mean(self.dist.scale),
        }


def draw_policy(
    policy: PolicyNet, zs: Float[Array, "t b latent"], *, key: Key[Array, ""]
) -> PolicyDraw:
    """Evaluate pi_s at every latent and draw the actions every term of Eq. 18 is taken at."""
    n, b = zs.shape[:2]
    sample_key, pair_key, dropout_key, kl_key = jr.split(key, 4)
    dist = vmap2(lambda zz: policy(zz))(zs)
    action, scaled_entropy = vmap2(lambda d, k: d.sample_with_entropy(key=k))(
        dist, keys2(sample_key, n, b)
    )
    return PolicyDraw(dist, action, scaled_entropy, pair_key, dropout_key, kl_key)


def policy_q(
    draw: PolicyDraw, critic: Ensemble, two_hot: TwoHot, zs: Float[Array, "t b latent"]
) -> Float[Array, "t b"]:
    """Q term of Eq. 18: the mean of a random pair of online heads, dropout on, at pi_s's action."""
    n, b = zs.shape[:2]
    pair = critic.subset(random_pair(draw.pair_key, critic.num_members))
    return vmap2(lambda zz, aa, k: jnp.mean(ensemble_values(pair, two_hot, zz, aa, key=k)))(
        zs, draw.action, keys2(draw.dropout_key, n, b)
    )


def policy_kl(
    draw: PolicyDraw, prior: AbstractActionDist, reduction: Literal["sum", "mean"]
) -> tuple[Float[Array, "t b"], Metrics]:
    """KL term of Eq. 18: KL(pi_s || pi_p) per latent (no gradient reaches the prior), and
    Fig. 7's diagnostic: the KL's mean and std (before scaling), with the prior's mean std and
    the root-mean-square gap between the two mean actions (per action dim). The KL of two
    Gaussians of std sigma whose means are d apart is d^2 / (2 sigma^2) per dim, so the gap
    tells a KL that grows because the means part from one that grows because both narrow."""
    prior = jax.lax.stop_gradient(prior)
    kl = kl2(draw.dist, prior, reduction, draw.kl_key)
    gap = vmap2(lambda d: d.mean_action())(draw.dist) - vmap2(lambda d: d.mean_action())(prior)
    return kl, {
        "kl_mean": jnp.mean(kl),
        "kl_std": jnp.std(kl),
        "prior_std": jnp.mean(prior.scale),
        "prior_mean_gap": jnp.sqrt(jnp.mean(gap**2)),
    }


def weighted_over_time(per_step: Float[Array, "t b"], rho: float) -> Float[Array, ""]:
    """sum_t rho^t / n mean_B(per_step): the temporal weighting of Eqs. 12-18."""
    return jnp.sum(rho_weights(per_step.shape[0], rho) * jnp.mean(per_step, axis=1))
