"""One seed's learner: its state, how it acts, and the update of Algorithm 2, lines 20-27.

The update is a pure function `(AgentState, Batch, key) -> (AgentState, metrics)`:
1. world model + Q, and the objective's extra critic (Q^lambda, Eq. 16), in one loss and one
   Adam step (TD-MPC2 + Eqs. 14-17);
2. the objective's prior fitted to the stored planner Gaussians (Eqs. 12-13);
3. the sampling policy by the objective's loss (Eq. 18 or its lambda = 0 / inf limits);
4. Polyak targets for Q and the extra critic.
The equations live in `losses.py`; which of them a run uses is decided by its policy
objective (`objectives.py`) and prior (`priors.py`).
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Bool, Float, Key, PyTree

from .buffer import Batch
from .config import AgentConfig
from .filters import filter_cond
from .losses import Metrics, rho_weights, world_model_loss
from .networks import MLP, adam_with_clip, keys2, polyak, tree_copy, vmap2
from .objectives import AbstractPolicyObjective, make_objective
from .planner import Plan, plan
from .termination import AbstractTermination
from .world_model import AbstractValueFunction, Networks, init_keys, make_networks


ObjectiveBuilder = Callable[..., AbstractPolicyObjective]


class ModelParams(eqx.Module):
    """What the world-model optimiser trains: h, d, R, the value function (Q or V), the
    objective's extra critic and the termination head (episodic tasks)."""

    encoder: MLP
    dynamics: MLP
    reward: MLP
    value: AbstractValueFunction
    critic: PyTree
    termination: AbstractTermination


class Optimizers(eqx.Module):
    """The optax transformations of the world model and the sampling policy (built once)."""

    model: optax.GradientTransformation = eqx.field(static=True)
    policy: optax.GradientTransformation = eqx.field(static=True)


class AgentState(eqx.Module):
    """Everything one seed learns: networks, Q target, objective, optimiser states."""

    nets: Networks
    target_value: AbstractValueFunction
    objective: AbstractPolicyObjective
    model_opt: optax.OptState
    policy_opt: optax.OptState
    optimizers: Optimizers

    def model_params(self) -> ModelParams:
        return _model_params(self.nets, self.objective)

    def with_model_params(self, p: ModelParams) -> "AgentState":
        nets = dataclasses.replace(
            self.nets,
            encoder=p.encoder,
            dynamics=p.dynamics,
            reward=p.reward,
            value=p.value,
            termination=p.termination,
        )
        return eqx.tree_at(
            lambda s: (s.nets, s.objective), self, (nets, self.objective.with_critic(p.critic))
        )


def _model_params(nets: Networks, objective: AbstractPolicyObjective) -> ModelParams:
    return ModelParams(
        nets.encoder, nets.dynamics, nets.reward, nets.value, objective.critic(), nets.termination
    )


class Targets(eqx.Module):
    """TD targets of one batch: the value function's (Eq. 15) and the objective's extra
    critic's (Eq. 17)."""

    value: Float[Array, "horizon batch"]
    critic: PyTree


def _params(tree: PyTree) -> PyTree:
    return eqx.filter(tree, eqx.is_inexact_array)


def _model_optimizer(cfg: AgentConfig) -> optax.GradientTransformation:
    """One global-norm clip over the whole model, then Adam with the encoder's learning rate
    scaled by `enc_lr_scale` (TD-MPC2's parameter groups)."""
    o = cfg.optim

    def labels(params: ModelParams) -> ModelParams:
        rest = jax.tree.map(lambda _: "rest", params)
        return eqx.tree_at(
            lambda p: p.encoder, rest, jax.tree.map(lambda _: "encoder", params.encoder)
        )

    return optax.chain(
        optax.clip_by_global_norm(o.grad_clip),
        optax.multi_transform(
            {"encoder": optax.adam(o.lr * o.enc_lr_scale), "rest": optax.adam(o.lr)}, labels
        ),
    )


def init_agent(
    cfg: AgentConfig, *, key: Key[Array, ""], make_objective: ObjectiveBuilder = make_objective
) -> AgentState:
    """Fresh networks (TD-MPC2 initialisation), the objective, targets and optimiser states.

    **Arguments:**
    - `make_objective`: builds the policy objective, `(cfg, *, critic_key, prior_key) ->
      AbstractPolicyObjective`; the default picks it from `cfg.lam`.
    """
    keys = init_keys(key)
    nets = make_networks(cfg, key=key)
    objective = make_objective(cfg, critic_key=keys["critic"], prior_key=keys["prior"])
    optimizers = Optimizers(
        model=_model_optimizer(cfg),
        policy=adam_with_clip(cfg.optim.lr, cfg.optim.grad_clip, cfg.optim.policy_eps),
    )
    params = _model_params(nets, objective)
    return AgentState(
        nets=nets,
        target_value=tree_copy(nets.value),
        objective=objective,
        model_opt=optimizers.model.init(_params(params)),
        policy_opt=optimizers.policy.init(_params(nets.policy)),
        optimizers=optimizers,
    )


def act(
    agent: AgentState,
    obs: Float[Array, " obs"],
    warm_start: Float[Array, "horizon action"],
    *,
    cfg: AgentConfig,
    eval_mode: bool,
    key: Key[Array, ""],
) -> Plan:
    """Encode an observation and plan from it (MPPI, Alg. 2 line 8): the executed action and
    the planner Gaussian. Used by training, evaluation and `scripts/evaluate.py`."""
    z = agent.nets.encode(obs)
    return plan(
        agent.nets,
        z,
        warm_start,
        cfg=cfg.planner,
        discount=cfg.discount,
        eval_mode=eval_mode,
        key=key,
    )


def policy_action(agent: AgentState, obs: Float[Array, " obs"]) -> Float[Array, " action"]:
    """The sampling policy's mean action at an observation, without planning."""
    return agent.nets.policy(agent.nets.encode(obs)).mean_action()


def td_targets(
    state: AgentState,
    batch: Batch,
    z_next: Float[Array, "horizon batch latent"],
    cfg: AgentConfig,
    *,
    key: Key[Array, ""],
) -> Targets:
    """TD targets of the value function (Eq. 15 for Q) and of the objective's critic (Eq. 17),
    from z' = h(o_{t+1}) and a~ ~ pi_s(z'), with the *target* heads and no entropy term (key
    layout: action, value, critic pair, kl = split(key, 4))."""
    nets = state.nets
    h, b = batch.reward.shape
    act_key, pair_key, critic_pair_key, kl_key = jr.split(key, 4)
    pi = vmap2(lambda zz: nets.policy(zz))(z_next)
    a_next = vmap2(lambda d, k: d.sample(key=k))(pi, keys2(act_key, h, b))
    bootstrap = cfg.discount * (1.0 - batch.terminated)
    td = state.target_value.td_target(nets, batch, z_next, a_next, bootstrap, key=pair_key)
    critic = state.objective.critic_target(
        nets.two_hot,
        pi,
        z_next,
        a_next,
        batch,
        bootstrap,
        cfg.loss,
        pair_key=critic_pair_key,
        kl_key=kl_key,
    )
    return Targets(td, critic)


def model_loss(
    params: ModelParams,
    state: AgentState,
    batch: Batch,
    z_next: Float[Array, "horizon batch latent"],
    targets: Targets,
    cfg: AgentConfig,
    key: Key[Array, ""],
) -> tuple[Float[Array, ""], tuple[Float[Array, "time batch latent"], Metrics]]:
    """TD-MPC2's world-model loss plus the objective's critic loss (Eq. 16 for Q^lambda)."""
    state = state.with_model_params(params)
    q_key, critic_key = jr.split(key)
    total, zs, metrics = world_model_loss(
        state.nets, batch, z_next, targets.value, cfg.loss, key=q_key
    )
    za = jnp.concatenate([zs[:-1], batch.action], axis=-1)
    weights = rho_weights(batch.reward.shape[0], cfg.loss.rho)
    extra, critic_metrics = state.objective.critic_loss(
        params.critic, state.nets.two_hot, za, targets.critic, weights, cfg.loss, key=critic_key
    )
    total = total + extra
    return total, (zs, {**metrics, **critic_metrics, "world_model_loss": total})


def _unless_pretrain(
    pretrain: Bool[Array, ""],
    step: Callable[[], tuple],
    get: Callable[[AgentState], tuple],
    put: Callable[[AgentState, tuple], AgentState],
    state: AgentState,
) -> tuple[AgentState, Metrics]:
    """Run `step` (returning new parts + metrics) unless `pretrain`; skipped metrics are NaN.

    A `lax.cond` on the unbatched flag: under the seed vmap only the taken branch runs.
    """
    shapes = eqx.filter_eval_shape(step)[-1]

    def skip():
        return *get(state), {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.items()}

    *new, metrics = filter_cond(pretrain, skip, step)
    return put(state, tuple(new)), metrics


def _model_step(
    state: AgentState,
    batch: Batch,
    cfg: AgentConfig,
    target_key: Key[Array, ""],
    loss_key: Key[Array, ""],
) -> tuple[AgentState, Float[Array, "time batch latent"], Metrics]:
    """Step 1: targets, then one Adam step on the world model and the objective's critic.

    **Returns:** the state, the detached rollout latents z_0..z_H and the metrics."""
    z_next = jax.lax.stop_gradient(vmap2(state.nets.encode)(batch.obs[1:]))
    targets = jax.lax.stop_gradient(td_targets(state, batch, z_next, cfg, key=target_key))
    params = state.model_params()
    (_, (zs, metrics)), grads = eqx.filter_value_and_grad(model_loss, has_aux=True)(
        params, state, batch, z_next, targets, cfg, loss_key
    )
    metrics["world_model_grad_norm"] = optax.global_norm(grads)
    metrics["td_target"] = jnp.mean(targets.value)
    updates, model_opt = state.optimizers.model.update(grads, state.model_opt, _params(params))
    state = state.with_model_params(eqx.apply_updates(params, updates))
    state = eqx.tree_at(lambda s: s.model_opt, state, model_opt)
    return state, jax.lax.stop_gradient(zs), metrics


def _fit_prior(state: AgentState, zs, batch: Batch, cfg: AgentConfig, key: Key[Array, ""]):
    """Step 2 (skipped in the pretraining burst): the objective's prior fit."""
    return state.objective.fit_prior(zs[: cfg.planner.horizon], batch, cfg.loss, key=key)


def _fit_policy(state: AgentState, zs, batch: Batch, cfg: AgentConfig, key: Key[Array, ""]):
    """Step 3: one Adam step on the sampling policy's loss; the objective's scales (and
    lambda) are updated by the same call."""
    latents = zs[: cfg.num_policy_latents]
    policy = state.nets.policy
    loss_fn = lambda p: state.objective.policy_loss(
        p, state.nets, latents, batch, cfg.loss, key=key
    )
    (_, (objective, metrics)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(policy)
    metrics["pi_grad_norm"] = optax.global_norm(grads)
    updates, policy_opt = state.optimizers.policy.update(grads, state.policy_opt, _params(policy))
    return eqx.apply_updates(policy, updates), policy_opt, objective, metrics


def update(
    state: AgentState,
    batch: Batch,
    *,
    cfg: AgentConfig,
    pretrain: bool | Bool[Array, ""] = False,
    key: Key[Array, ""],
) -> tuple[AgentState, Metrics]:
    """One update of Algorithm 2 (lines 20-27) for one seed.

    **Arguments:**
    - `pretrain`: the seed-phase burst (paper B.4): world model and critics only, plus the
      sampling policy when `cfg.loss.pretrain_policy` (TD-MPC2).

    **Returns:** the new state and scalar metrics (every loss term, gradient norms, scales,
    lambda, and the mean and std of the KL term of Eq. 18 where there is one).
    """
    target_key, wm_key, prior_key, pi_key = jr.split(key, 4)
    state, zs, metrics = _model_step(state, batch, cfg, target_key, wm_key)
    pretrain = jnp.asarray(pretrain)

    state, prior_metrics = _unless_pretrain(
        pretrain,
        lambda: _fit_prior(state, zs, batch, cfg, prior_key),
        lambda st: (st.objective,),
        lambda st, new: eqx.tree_at(lambda s: s.objective, st, new[0]),
        state,
    )
    metrics.update(prior_metrics)

    policy_parts = lambda st: (st.nets.policy, st.policy_opt, st.objective)
    set_policy_parts = lambda st, new: eqx.tree_at(policy_parts, st, new)
    fit_policy = lambda: _fit_policy(state, zs, batch, cfg, pi_key)
    if cfg.loss.pretrain_policy:
        *new, pi_metrics = fit_policy()
        state = set_policy_parts(state, tuple(new))
    else:
        state, pi_metrics = _unless_pretrain(
            pretrain, fit_policy, policy_parts, set_policy_parts, state
        )
    metrics.update(pi_metrics)

    state = eqx.tree_at(
        lambda s: (s.target_value, s.objective),
        state,
        (
            polyak(state.nets.value, state.target_value, cfg.loss.tau),
            state.objective.update_targets(cfg.loss.tau),
        ),
    )
    metrics.update(state.objective.report())
    return state, metrics


def metrics_skipped_in_pretraining(cfg: AgentConfig) -> frozenset[str]:
    """Metrics of the steps that the pretraining burst skips (NaN there by design): the
    prior's fit and, unless `cfg.loss.pretrain_policy`, the sampling policy's."""
    h, a = cfg.planner.horizon, cfg.action_dim
    steps = [_fit_prior] if cfg.loss.pretrain_policy else [_fit_prior, _fit_policy]

    def metrics_of(step) -> Metrics:  # traced only (eval_shape): nothing is computed
        state = init_agent(cfg, key=jr.key(0))
        zeros = lambda *dims: jnp.zeros(dims)
        batch = Batch(
            zeros(h + 1, 1, cfg.obs_dim),
            zeros(h, 1, a),
            zeros(h, 1),
            zeros(h, 1),
            zeros(h + 1, 1, a),
            zeros(h + 1, 1, a),
        )
        return step(state, zeros(h + 1, 1, cfg.model.latent_dim), batch, cfg, jr.key(0))[-1]

    return frozenset(name for step in steps for name in eqx.filter_eval_shape(metrics_of, step))
