"""MPPI in the learned latent model, seeded by the sampling policy (paper §3, App. B.1; spec §4).

`plan` is a pure function of the networks, one latent state, the warm-start mean and a key.
It returns the executed action and the planner Gaussian (a_bar_0, sigma_0) that the replay
buffer stores and the prior is fitted to. `reanalyze` re-plans many stored states at once with
a zero warm start (BMPC's lazy reanalyze).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Key

from .config import PlannerConfig
from .world_model import Networks, PolicyNet


class Plan(eqx.Module):
    """Result of one planning call."""

    action: Float[Array, " action"]
    """Executed action: first action of an elite drawn by weight, plus sigma_0 noise in training."""
    mean: Float[Array, "horizon action"]
    """Final MPPI mean; `mean[0]` is a_bar_0."""
    std: Float[Array, "horizon action"]
    """Final MPPI std (clipped to [min_std, max_std]); `std[0]` is sigma_0."""


def shift_warm_start(mean: Float[Array, "horizon action"]) -> Float[Array, "horizon action"]:
    """Warm start for the next step: the mean shifted by one step, zero at the end."""
    return jnp.concatenate([mean[1:], jnp.zeros_like(mean[:1])])


def trajectory_values(
    nets: Networks,
    z: Float[Array, " latent"],
    actions: Float[Array, "sample horizon action"],
    discount: float,
    *,
    key: Key[Array, ""],
) -> Float[Array, " sample"]:
    """H-step return estimate of Eq. 10: sum_t gamma^t r(z_t, a_t) + gamma^H V(z_H).

    The bootstrap is the world model's value function (`AbstractValueFunction.bootstrap`): for
    TD-MPC2's Q, the average of a random pair of heads, no dropout, at an action sampled from
    the sampling policy (not Q^lambda).
    """
    num_samples = actions.shape[0]

    def step(carry, a_t):
        z_t, ret, disc, alive = carry
        r = jax.vmap(nets.reward_value)(z_t, a_t)
        z_next = jax.vmap(nets.next)(z_t, a_t)
        # Episodic tasks: nothing counts after the predicted end (always alive otherwise).
        ended = jax.vmap(nets.termination.ended)(z_next)
        return (z_next, ret + disc * alive * r, disc * discount, alive * (1.0 - ended)), None

    z0 = jnp.broadcast_to(z, (num_samples, z.shape[0]))
    init = (z0, jnp.zeros(num_samples), jnp.ones(()), jnp.ones(num_samples))
    (z_h, ret, disc, alive), _ = jax.lax.scan(step, init, jnp.swapaxes(actions, 0, 1))
    value = nets.value.bootstrap(nets, z_h, key=key)
    return jnp.nan_to_num(ret + disc * alive * value, nan=0.0)


def policy_trajectories(
    nets: Networks,
    policy: PolicyNet,
    z: Float[Array, " latent"],
    num: int,
    horizon: int,
    *,
    key: Key[Array, ""],
) -> Float[Array, "sample horizon action"]:
    """`num` open-loop action sequences from rolling `policy` through the model."""

    def step(z_t, k):
        a_t = jax.vmap(lambda zz, kk: policy(zz).sample(key=kk))(z_t, jr.split(k, num))
        return jax.vmap(nets.next)(z_t, a_t), a_t

    z0 = jnp.broadcast_to(z, (num, z.shape[0]))
    _, actions = jax.lax.scan(step, z0, jr.split(key, horizon))
    return jnp.swapaxes(actions, 0, 1)


def elite_update(
    elites: Float[Array, "elite horizon action"],
    elite_values: Float[Array, " elite"],
    cfg: PlannerConfig,
) -> tuple[Float[Array, " elite"], Float[Array, "horizon action"], Float[Array, "horizon action"]]:
    """Eq. 11 (code convention): w = softmax(temperature * G) over the elites, then the
    weighted mean and the weighted std around the new mean, clipped to [min_std, max_std]."""
    weights = jax.nn.softmax(cfg.temperature * elite_values)
    mean = jnp.einsum("e,eha->ha", weights, elites)
    var = jnp.einsum("e,eha->ha", weights, (elites - mean[None]) ** 2)
    return weights, mean, jnp.clip(jnp.sqrt(var), cfg.min_std, cfg.max_std)


def plan(
    nets: Networks,
    z: Float[Array, " latent"],
    warm_start: Float[Array, "horizon action"],
    *,
    cfg: PlannerConfig,
    discount: float,
    eval_mode: bool,
    key: Key[Array, ""],
    trajectory_policy: PolicyNet | None = None,
) -> Plan:
    """One MPPI planning call from latent state `z` (spec §4; TD-MPC2 `_plan`).

    **Arguments:**
    - `warm_start`: initial mean (the previous plan shifted by `shift_warm_start`, or zeros at
      the start of an episode and in reanalyze). The std always restarts at `max_std`.
    - `eval_mode`: when True the executed action gets no sigma_0 noise (the elite is still
      drawn at random by weight, as in TD-MPC2).
    - `trajectory_policy`: draws the `num_pi_trajs` trajectories (default: the sampling
      policy itself; reanalyze passes a wider one). The bootstrap action always comes from
      the sampling policy.

    **Returns:** a `Plan` with the executed action and the final mean and std.
    """
    horizon, action_dim = warm_start.shape
    num_iterations = cfg.num_iterations(action_dim)
    num_random = cfg.num_samples - cfg.num_pi_trajs
    pi_key, iter_key, choice_key, noise_key = jr.split(key, 4)
    # The policy trajectories are drawn once and re-scored in every iteration.
    policy = nets.policy if trajectory_policy is None else trajectory_policy
    pi_actions = policy_trajectories(nets, policy, z, cfg.num_pi_trajs, horizon, key=pi_key)

    def iteration(carry, k):
        mean, std, _, _ = carry
        sample_key, value_key = jr.split(k)
        eps = jr.normal(sample_key, (num_random, horizon, action_dim))
        sampled = jnp.clip(mean[None] + std[None] * eps, -1.0, 1.0)
        actions = jnp.concatenate([pi_actions, sampled])
        values = trajectory_values(nets, z, actions, discount, key=value_key)
        elite_values, elite_idx = jax.lax.top_k(values, cfg.num_elites)
        elites = actions[elite_idx]
        weights, mean, std = elite_update(elites, elite_values, cfg)
        return (mean, std, elites, weights), None

    init = (
        warm_start,
        jnp.full_like(warm_start, cfg.max_std),
        jnp.zeros((cfg.num_elites, horizon, action_dim)),
        jnp.zeros(cfg.num_elites),
    )
    (mean, std, elites, weights), _ = jax.lax.scan(
        iteration, init, jr.split(iter_key, num_iterations)
    )
    chosen = jr.categorical(choice_key, jnp.log(weights))
    action = elites[chosen, 0]
    if not eval_mode:
        action = action + std[0] * jr.normal(noise_key, action.shape)
    return Plan(action=jnp.clip(action, -1.0, 1.0), mean=mean, std=std)


def reanalyze(
    nets: Networks,
    z: Float[Array, "state latent"],
    *,
    cfg: PlannerConfig,
    discount: float,
    key: Key[Array, ""],
) -> tuple[Float[Array, "state action"], Float[Array, "state action"]]:
    """Re-plan many latent states at once from a zero warm start (lazy reanalyze).

    As in BMPC, the policy trajectories come from the sampling policy with its log-std
    squashed into `cfg.reanalyze_log_std` (when set) instead of its own bounds.

    **Returns:** the fresh planner Gaussians `(a_bar_0, sigma_0)` of every state.
    """
    warm = jnp.zeros((cfg.horizon, nets.policy.action_dim))
    explore = (
        None
        if cfg.reanalyze_log_std is None
        else nets.policy.with_log_std_bounds(*cfg.reanalyze_log_std)
    )
    plans = jax.vmap(
        lambda zz, k: plan(
            nets,
            zz,
            warm,
            cfg=cfg,
            discount=discount,
            eval_mode=False,
            key=k,
            trajectory_policy=explore,
        )
    )(z, jr.split(key, z.shape[0]))
    return plans.mean[:, 0], plans.std[:, 0]
