"""One seed's learner: its state and the update of Algorithm 2, lines 12-27 (spec §3).

The update is a pure function `(AgentState, Batch, key) -> (AgentState, metrics)`:
1. world model + Q + Q^lambda in one loss and one Adam step (TD-MPC2 + Eqs. 14-17);
2. adaptive prior fitted to the stored planner Gaussians by reverse or forward KL (Eqs. 12-13);
3. sampling policy by the KL-regularised objective (Eq. 18);
4. lambda update (auto-tuned lambda only) and Polyak targets for Q and Q^lambda.
lambda = 0 reduces step 3 to TD-MPC2's policy loss; lambda = inf to BMPC's KL-only loss.
"""

import functools as ft
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Bool, Float, Key

from .config import AgentConfig
from .distributions import AbstractActionDist, ClippedGaussian, kl_divergence
from .filters import filter_cond
from .lam import AbstractLambda, make_lambda
from .math import RunningScale
from .networks import Ensemble, polyak, tree_copy
from .world_model import Networks, PolicyNet, ensemble_values, make_networks, random_pair


Metrics = dict[str, Float[Array, ""]]


class Batch(eqx.Module):
    """B subsequences of H+1 observations inside one episode (time-major).

    `plan_mean[t]`, `plan_std[t]` are the planner Gaussian stored for observation t.
    """

    obs: Float[Array, "time batch obs"]
    action: Float[Array, "horizon batch action"]
    reward: Float[Array, "horizon batch"]
    terminated: Float[Array, "horizon batch"]
    plan_mean: Float[Array, "time batch action"]
    plan_std: Float[Array, "time batch action"]


class Scales(eqx.Module):
    """Running 5-95 percentile scales S_Q, S_KL, S_p (Eqs. 12, 13, 17, 18)."""

    q: RunningScale
    kl: RunningScale
    prior: RunningScale


class AgentState(eqx.Module):
    """Everything one seed learns: networks, targets, optimiser states, scales, lambda."""

    nets: Networks
    target_q: Ensemble
    target_qlam: Ensemble | None
    wm_opt: optax.OptState
    policy_opt: optax.OptState
    prior_opt: optax.OptState | None
    scales: Scales
    lam: AbstractLambda


class Optimizers(eqx.Module):
    """The three optax transformations (static: they live in closures, not in the state)."""

    world_model: optax.GradientTransformation = eqx.field(static=True)
    policy: optax.GradientTransformation = eqx.field(static=True)
    prior: optax.GradientTransformation = eqx.field(static=True)


@ft.cache
def make_optimizers(cfg: AgentConfig) -> Optimizers:
    """Adam for each part, each with its own global-norm clip (cached: same object, no retrace)."""
    o = cfg.optim
    return Optimizers(
        world_model=optax.chain(optax.clip_by_global_norm(o.grad_clip), optax.adam(o.lr)),
        policy=optax.chain(
            optax.clip_by_global_norm(o.grad_clip), optax.adam(o.lr, eps=o.policy_eps)
        ),
        prior=optax.chain(
            optax.clip_by_global_norm(o.grad_clip), optax.adam(o.lr, eps=o.policy_eps)
        ),
    )


def _world_model_part(nets: Networks) -> tuple:
    """The parameters trained by the world-model loss: h, d, R, Q and Q^lambda."""
    return (nets.encoder, nets.dynamics, nets.reward, nets.q, nets.qlam)


def _with_world_model(nets: Networks, part: tuple) -> Networks:
    return eqx.tree_at(_world_model_part, nets, part, is_leaf=lambda x: x is None)


def _params(tree):
    return eqx.filter(tree, eqx.is_inexact_array)


def init_agent(cfg: AgentConfig, *, key: Key[Array, ""]) -> AgentState:
    """Fresh networks (TD-MPC2 initialisation), target copies and optimiser states."""
    opts = make_optimizers(cfg)
    nets = make_networks(cfg, key=key)
    ones = RunningScale.init
    return AgentState(
        nets=nets,
        target_q=tree_copy(nets.q),
        target_qlam=tree_copy(nets.qlam) if nets.qlam is not None else None,
        wm_opt=opts.world_model.init(_params(_world_model_part(nets))),
        policy_opt=opts.policy.init(_params(nets.policy)),
        prior_opt=opts.prior.init(_params(nets.prior)) if nets.prior is not None else None,
        scales=Scales(q=ones(), kl=ones(), prior=ones()),
        lam=make_lambda(cfg),
    )


def _vmap2(f: Callable) -> Callable:
    """Map over the two leading (time, batch) axes."""
    return jax.vmap(jax.vmap(f))


def _keys2(key: Key[Array, ""], t: int, b: int) -> Key[Array, "t b"]:
    return jr.split(key, (t, b))


def _replay_prior(
    mean: Float[Array, " action"], std: Float[Array, " action"]
) -> AbstractActionDist:
    """The stored planner Gaussian N(a_bar, sigma) used directly as the prior (BMPC)."""
    return ClippedGaussian(loc=mean, scale=std)


def _prior_dists(
    prior: PolicyNet | None,
    z: Float[Array, "t b latent"],
    mean: Float[Array, "t b action"],
    std: Float[Array, "t b action"],
) -> AbstractActionDist:
    """pi_p at latents z: the learned prior network, or the stored planner Gaussians."""
    if prior is None:
        return _vmap2(_replay_prior)(mean, std)
    return _vmap2(lambda zz: prior(zz))(z)


def _kl2(
    p: AbstractActionDist, q: AbstractActionDist, cfg: AgentConfig, key: Key[Array, ""]
) -> Float[Array, "t b"]:
    t, b = p.loc.shape[:2]
    fn = lambda pp, qq, k: kl_divergence(pp, qq, reduction=cfg.loss.kl_reduction, key=k)
    return _vmap2(fn)(p, q, _keys2(key, t, b))


def _weights(n: int, rho: float) -> Float[Array, " t"]:
    """rho^t / n: temporal weights, normalised by the number of terms (not by sum rho^t)."""
    return rho ** jnp.arange(n, dtype=jnp.float32) / n


def td_targets(
    state: AgentState,
    batch: Batch,
    z_next: Float[Array, "horizon batch latent"],
    cfg: AgentConfig,
    *,
    key: Key[Array, ""],
) -> tuple[Float[Array, "horizon batch"], Float[Array, "horizon batch"] | None]:
    """TD targets of Eq. 15 (Q) and Eq. 17 (Q^lambda), from z' = h(o_{t+1}) (no gradient).

    Both use the min of a random pair of *target* heads at a sampled pi_s action and no entropy
    term; the Q^lambda target subtracts lambda * KL[pi_s || pi_p](z') / max(1, S_KL).
    """
    nets = state.nets
    h, b = batch.reward.shape
    act_key, pair_key, lam_pair_key, kl_key = jr.split(key, 4)
    pi = _vmap2(lambda zz: nets.policy(zz))(z_next)
    a_next = _vmap2(lambda d, k: d.sample(key=k))(pi, _keys2(act_key, h, b))
    bootstrap = cfg.discount * (1.0 - batch.terminated)

    def pair_min(target: Ensemble, k: Key[Array, ""]) -> Float[Array, "horizon batch"]:
        pair = target.subset(random_pair(k, target.num_members))
        return _vmap2(lambda zz, aa: jnp.min(ensemble_values(pair, nets.two_hot, zz, aa)))(
            z_next, a_next
        )

    td = batch.reward + bootstrap * pair_min(state.target_q, pair_key)
    if state.target_qlam is None:
        return td, None
    prior = _prior_dists(nets.prior, z_next, batch.plan_mean[1:], batch.plan_std[1:])
    kl = _kl2(pi, prior, cfg, kl_key) / state.scales.kl.value
    soft_value = pair_min(state.target_qlam, lam_pair_key) - state.lam.value() * kl
    return td, batch.reward + bootstrap * soft_value


def world_model_loss(
    part: tuple,
    state: AgentState,
    batch: Batch,
    z_next: Float[Array, "horizon batch latent"],
    td: Float[Array, "horizon batch"],
    td_lam: Float[Array, "horizon batch"] | None,
    cfg: AgentConfig,
    key: Key[Array, ""],
) -> tuple[Float[Array, ""], tuple[Float[Array, "time batch latent"], Metrics]]:
    """TD-MPC2's model loss (consistency 20, reward 0.1, value 0.1) plus the Q^lambda loss of
    Eq. 16 (coefficient 0.1), all on the latent rollout z_{t+1} = d(z_t, a_t) from z_0 = h(o_0)."""
    nets = _with_world_model(state.nets, part)
    lc = cfg.loss
    h, b = batch.reward.shape
    q_key, qlam_key = jr.split(key)
    w = _weights(h, lc.rho)

    def step(z, a):
        z_next_pred = jax.vmap(nets.next)(z, a)
        return z_next_pred, z_next_pred

    z0 = jax.vmap(nets.encode)(batch.obs[0])
    _, z_pred = jax.lax.scan(step, z0, batch.action)
    zs = jnp.concatenate([z0[None], z_pred])  # (H+1, B, L)
    consistency = jnp.sum(w * jnp.mean((z_pred - z_next) ** 2, axis=(1, 2)))

    ce = nets.two_hot.cross_entropy
    reward_logits = _vmap2(nets.reward_logits)(zs[:-1], batch.action)
    reward_loss = jnp.sum(w * jnp.mean(_vmap2(ce)(reward_logits, batch.reward), axis=1))

    def ensemble_ce(
        ensemble: Ensemble, target: Float[Array, "horizon batch"], k: Key[Array, ""]
    ) -> Float[Array, ""]:
        # All heads, dropout on (training mode); normalised by H * num_heads.
        za = jnp.concatenate([zs[:-1], batch.action], axis=-1)
        logits = _vmap2(lambda x, kk: ensemble(x, key=kk))(za, _keys2(k, h, b))  # (H, B, N, bins)
        per_head = jax.vmap(jax.vmap(jax.vmap(ce, in_axes=(0, None))))(logits, target)
        return jnp.sum(w * jnp.mean(jnp.sum(per_head, axis=-1), axis=1)) / ensemble.num_members

    value_loss = ensemble_ce(nets.q, td, q_key)
    total = (
        lc.consistency_coef * consistency
        + lc.reward_coef * reward_loss
        + lc.value_coef * value_loss
    )
    metrics = {
        "consistency_loss": consistency,
        "reward_loss": reward_loss,
        "value_loss": value_loss,
    }
    if nets.qlam is not None:
        qlam_loss = ensemble_ce(nets.qlam, td_lam, qlam_key)  # Eq. 16
        total = total + lc.qlam_coef * qlam_loss
        metrics["qlam_loss"] = qlam_loss
    metrics["world_model_loss"] = total
    return total, (zs, metrics)


def prior_loss(
    prior: PolicyNet,
    zs: Float[Array, "horizon batch latent"],
    batch: Batch,
    scale: RunningScale,
    cfg: AgentConfig,
    key: Key[Array, ""],
) -> tuple[Float[Array, ""], tuple[RunningScale, Metrics]]:
    """Eq. 12 (reverse: KL[pi_p || pi_P]) or Eq. 13 (forward: KL[pi_P || pi_p]) over the
    detached rollout latents z_0..z_{H-1}, weighted rho^t / H and divided by max(1, S_p)."""
    h = zs.shape[0]
    fitted = _vmap2(lambda zz: prior(zz))(zs)
    planner = _vmap2(_replay_prior)(batch.plan_mean[:h], batch.plan_std[:h])
    if cfg.prior_loss == "reverse":
        kl = _kl2(fitted, planner, cfg, key)
    else:
        kl = _kl2(planner, fitted, cfg, key)
    scale = scale.update(kl[0], cfg.loss.scale_tau)
    loss = jnp.sum(_weights(h, cfg.loss.rho) * jnp.mean(kl, axis=1)) / scale.value
    return loss, (scale, {"prior_loss": loss, "prior_kl": jnp.mean(kl)})


def policy_loss(
    policy: PolicyNet,
    state: AgentState,
    zs: Float[Array, "time batch latent"],
    batch: Batch,
    cfg: AgentConfig,
    key: Key[Array, ""],
) -> tuple[Float[Array, ""], tuple[Scales, Metrics]]:
    """Eq. 18: sum_t rho^t/n [lambda KL(pi_s||pi_p)/max(1,S_KL) - Q^lambda/max(1,S_Q) - alpha H(pi_s)].

    Q^lambda (Q when lambda = 0) is the average of a random pair of online heads, dropout on,
    at a reparameterised pi_s sample; gradients reach only pi_s. With lambda = inf the Q term
    is dropped and the KL enters with weight 1 (BMPC's loss).
    """
    nets = state.nets
    lc = cfg.loss
    n, b = zs.shape[:2]
    sample_key, pair_key, dropout_key, kl_key = jr.split(key, 4)
    w = _weights(n, lc.rho)
    pi = _vmap2(lambda zz: policy(zz))(zs)
    actions, scaled_entropy = _vmap2(lambda d, k: d.sample_with_entropy(key=k))(
        pi, _keys2(sample_key, n, b)
    )
    scales = state.scales
    metrics: Metrics = {
        "pi_scaled_entropy": jnp.mean(scaled_entropy),
        "pi_entropy": jnp.mean(_vmap2(lambda d: d.entropy())(pi)),
    }
    per_step = -lc.entropy_coef * scaled_entropy  # (n, B)

    if not cfg.kl_only:
        critic = nets.q if nets.qlam is None else nets.qlam
        pair = critic.subset(random_pair(pair_key, critic.num_members))
        q = _vmap2(lambda zz, aa, k: jnp.mean(ensemble_values(pair, nets.two_hot, zz, aa, key=k)))(
            zs, actions, _keys2(dropout_key, n, b)
        )
        scales = eqx.tree_at(lambda s: s.q, scales, scales.q.update(q[0], lc.scale_tau))
        per_step = per_step - q / scales.q.value
        metrics["pi_q"] = jnp.mean(q)

    if cfg.has_kl:
        prior = jax.lax.stop_gradient(
            _prior_dists(nets.prior, zs, batch.plan_mean[:n], batch.plan_std[:n])
        )
        kl = _kl2(pi, prior, cfg, kl_key)
        scales = eqx.tree_at(lambda s: s.kl, scales, scales.kl.update(kl[0], lc.scale_tau))
        weight = 1.0 if cfg.kl_only else state.lam.value()
        per_step = per_step + weight * kl / scales.kl.value
        # Fig. 7 diagnostic: statistics of the KL term of Eq. 18 (before scaling).
        metrics["kl_mean"] = jnp.mean(kl)
        metrics["kl_std"] = jnp.std(kl)

    loss = jnp.sum(w * jnp.mean(per_step, axis=1))
    metrics["pi_loss"] = loss
    return loss, (scales, metrics)


def _apply(opt: optax.GradientTransformation, grads, opt_state, module) -> tuple:
    updates, opt_state = opt.update(grads, opt_state, _params(module))
    return eqx.apply_updates(module, updates), opt_state


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
    - `pretrain`: the seed-phase burst (paper B.4): world model, Q and Q^lambda only, plus the
      sampling policy when `cfg.loss.pretrain_policy` (TD-MPC2).

    **Returns:** the new state and scalar metrics (every loss term, gradient norms, scales,
    mean and std of the KL term of Eq. 18).
    """
    opts = make_optimizers(cfg)
    target_key, wm_key, prior_key, pi_key = jr.split(key, 4)
    nets = state.nets
    h = cfg.planner.horizon

    z_next = jax.lax.stop_gradient(_vmap2(nets.encode)(batch.obs[1:]))
    td, td_lam = jax.lax.stop_gradient(td_targets(state, batch, z_next, cfg, key=target_key))

    part = _world_model_part(nets)
    (_, (zs, metrics)), grads = eqx.filter_value_and_grad(world_model_loss, has_aux=True)(
        part, state, batch, z_next, td, td_lam, cfg, wm_key
    )
    metrics["world_model_grad_norm"] = optax.global_norm(grads)
    updates, wm_opt = opts.world_model.update(grads, state.wm_opt, _params(part))
    # Adam is invariant to gradient scale, so the encoder's lr x 0.3 is applied to its step.
    updates = (jax.tree.map(lambda u: cfg.optim.enc_lr_scale * u, updates[0]), *updates[1:])
    nets = _with_world_model(nets, eqx.apply_updates(part, updates))
    metrics["td_target"] = jnp.mean(td)
    zs = jax.lax.stop_gradient(zs)
    state = eqx.tree_at(
        lambda s: (s.nets, s.wm_opt), state, (nets, wm_opt), is_leaf=lambda x: x is None
    )

    pretrain = jnp.asarray(pretrain)
    if nets.prior is not None:

        def fit_prior():
            (_, (scale, m)), grads = eqx.filter_value_and_grad(prior_loss, has_aux=True)(
                nets.prior, zs[:h], batch, state.scales.prior, cfg, prior_key
            )
            m["prior_grad_norm"] = optax.global_norm(grads)
            prior, prior_opt = _apply(opts.prior, grads, state.prior_opt, nets.prior)
            return prior, prior_opt, scale, m

        state, prior_metrics = _unless_pretrain(
            pretrain,
            fit_prior,
            lambda st: (st.nets.prior, st.prior_opt, st.scales.prior),
            lambda st, new: eqx.tree_at(
                lambda s: (s.nets.prior, s.prior_opt, s.scales.prior), st, new
            ),
            state,
        )
        metrics.update(prior_metrics)

    def fit_policy():
        latents = zs[: cfg.num_policy_latents]
        (_, (scales, m)), grads = eqx.filter_value_and_grad(policy_loss, has_aux=True)(
            state.nets.policy, state, latents, batch, cfg, pi_key
        )
        m["pi_grad_norm"] = optax.global_norm(grads)
        policy, policy_opt = _apply(opts.policy, grads, state.policy_opt, state.nets.policy)
        lam = state.lam.update(m["kl_mean"]) if cfg.has_kl else state.lam
        return policy, policy_opt, scales, lam, m

    policy_parts = lambda st: (st.nets.policy, st.policy_opt, st.scales, st.lam)
    set_policy_parts = lambda st, new: eqx.tree_at(policy_parts, st, new)
    if cfg.loss.pretrain_policy:
        *new, pi_metrics = fit_policy()
        state = set_policy_parts(state, tuple(new))
    else:
        state, pi_metrics = _unless_pretrain(
            pretrain, fit_policy, policy_parts, set_policy_parts, state
        )
    metrics.update(pi_metrics)

    state = eqx.tree_at(
        lambda s: (s.target_q, s.target_qlam),
        state,
        (
            polyak(state.nets.q, state.target_q, cfg.loss.tau),
            None
            if state.target_qlam is None
            else polyak(state.nets.qlam, state.target_qlam, cfg.loss.tau),
        ),
        is_leaf=lambda x: x is None,
    )
    metrics.update(
        s_q=state.scales.q.value,
        s_kl=state.scales.kl.value,
        s_p=state.scales.prior.value,
        lam=state.lam.value(),
    )
    return state, metrics
