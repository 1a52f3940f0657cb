"""The training loop of Algorithm 2 as one scan-compiled function over N seeds.

Shape of the computation: `lax.scan` over agent steps; inside each step every per-seed
function (planning, buffer writes, sampling, reanalyze, update) is `vmap`ped over the seed
axis, while the environment is stepped once for the whole seed batch (a vmapped JAX task or
one host callback). The schedule (seed phase, pretraining burst, reanalyze every k updates) is
driven by *unbatched* counters, so each `lax.cond` (and the burst's `fori_loop`) runs only
what is active at that step, even under the seed `vmap`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, Int, Key, PyTree

from .agent import AgentState, act, init_agent, policy_action, update
from .buffer import ReplayBuffer, Transition
from .config import AgentConfig
from .envs.base import AbstractEnv
from .filters import filter_fori_loop, filter_scan
from .planner import reanalyze, shift_warm_start


class Schedule(eqx.Module):
    """Static facts of a run's schedule."""

    seed_steps: int = eqx.field(static=True)
    """Uniform-random steps, then a burst of this many pretraining updates."""
    capacity: int = eqx.field(static=True)
    reanalyze_interval: int = eqx.field(static=True)
    reanalyze_batch: int = eqx.field(static=True)


class SeedState(eqx.Module):
    """Per-seed part of the loop state (`*seed`: a leading seed axis when batched)."""

    agent: AgentState
    buffer: ReplayBuffer
    obs: Float[Array, "*seed obs"]
    warm_start: Float[Array, "*seed horizon action"]
    episode_step: Int[Array, "*seed"]
    episode_return: Float[Array, "*seed"]
    episode_discounted: Float[Array, "*seed"]
    """Discounted return of the running episode from its first state."""
    episode_q: Float[Array, "*seed"]
    """The value estimate at the running episode's first state and action."""
    key: Key[Array, "*seed"]


class LoopState(eqx.Module):
    seeds: SeedState
    env_state: PyTree
    step: Int[Array, ""]
    """Agent steps taken by every seed."""
    updates: Int[Array, ""]
    """Regular (non-pretraining) updates done by every seed."""


KEY_STREAMS = {"init": 0, "train": 1, "env": 2, "eval": 3}
"""The independent key stream of each use, folded into a seed's key: `stream(keys, "env")`."""


def seed_keys(seed: int, num_seeds: int) -> Key[Array, " seed"]:
    """Run i uses jax.random.key(seed + i): a seed gives the same run alone or in a batch."""
    return jax.vmap(jr.key)(seed + jnp.arange(num_seeds))


def stream(keys: Key[Array, " seed"], name: str) -> Key[Array, " seed"]:
    """Each seed's key for one use (`KEY_STREAMS`)."""
    return jax.vmap(lambda k: jr.fold_in(k, KEY_STREAMS[name]))(keys)


def init_loop(
    cfg: AgentConfig,
    schedule: Schedule,
    env: AbstractEnv,
    keys: Key[Array, " seed"],
    swept: Float[Array, " seed"] | None = None,
) -> LoopState:
    """Fresh agents, empty buffers and reset environments for every seed (every run of a
    sweep, whose swept lambda hyperparameter per run is `swept`; see `pompc_eqx.sweep`)."""
    env_state, obs = env.reset(stream(keys, "env"))
    agents = eqx.filter_vmap(lambda k: init_agent(cfg, key=k))(stream(keys, "init"))
    if swept is not None:
        set_value = lambda a, v: eqx.tree_at(lambda a: a.objective.lam, a, a.objective.lam.swept(v))
        agents = eqx.filter_vmap(set_value)(agents, swept)
    horizon = cfg.planner.horizon
    num = keys.shape[0]
    buffers = eqx.filter_vmap(
        lambda _: ReplayBuffer.empty(schedule.capacity, cfg.obs_dim, cfg.action_dim, horizon)
    )(jnp.arange(num))
    seeds = SeedState(
        agent=agents,
        buffer=buffers,
        obs=obs,
        warm_start=jnp.zeros((num, horizon, cfg.action_dim)),
        episode_step=jnp.zeros((num,), jnp.int32),
        episode_return=jnp.zeros((num,)),
        episode_discounted=jnp.zeros((num,)),
        episode_q=jnp.zeros((num,)),
        key=stream(keys, "train"),
    )
    return LoopState(
        seeds=seeds,
        env_state=env_state,
        step=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
    )


def learn(
    agent: AgentState,
    buffer: ReplayBuffer,
    key: Key[Array, ""],
    pretrain: Bool[Array, ""],
    with_reanalyze: Bool[Array, ""],
    *,
    cfg: AgentConfig,
    schedule: Schedule,
) -> tuple[AgentState, ReplayBuffer, dict[str, Float[Array, ""]]]:
    """Sample a batch, optionally reanalyze part of it (written back to the buffer), update.

    Lazy reanalyze (Alg. 2 lines 14-19): the first `reanalyze_batch` sequences' H states are
    re-planned from a zero warm start with the current networks, and the fresh planner
    Gaussians replace the stored ones in the buffer and in this batch. The flags are
    unbatched under the seed vmap, so each `lax.cond` runs only its taken branch.
    """
    sample_key, reanalyze_key, update_key = jr.split(key, 3)
    starts = buffer.sample_starts(cfg.batch_size, key=sample_key)
    batch = buffer.gather(starts)
    h, n = cfg.planner.horizon, schedule.reanalyze_batch

    def fresh_plans():
        z = jax.vmap(jax.vmap(agent.nets.encode))(batch.obs[:h, :n])
        mean, std = reanalyze(
            agent.nets,
            z.reshape(h * n, -1),
            cfg=cfg.planner,
            discount=cfg.discount,
            key=reanalyze_key,
        )
        return mean.reshape(h, n, -1), std.reshape(h, n, -1)

    def stored_plans():
        return batch.plan_mean[:h, :n], batch.plan_std[:h, :n]

    mean, std = jax.lax.cond(with_reanalyze, fresh_plans, stored_plans)
    buffer = buffer.write_plans(starts[:n], mean, std)
    batch = eqx.tree_at(
        lambda b: (b.plan_mean, b.plan_std),
        batch,
        (batch.plan_mean.at[:h, :n].set(mean), batch.plan_std.at[:h, :n].set(std)),
    )
    agent, metrics = update(agent, batch, cfg=cfg, pretrain=pretrain, key=update_key)
    return agent, buffer, metrics


LOOP_COUNTERS = ("episode_return", "nonfinite_action", "num_updates", "pretrain")
"""Per-step bookkeeping of the loop (not update terms, and not averaged per logging window)."""
LOOP_METRICS = (*LOOP_COUNTERS, "plan_std", "plan_std_at_floor", "q_estimate", "q_realised")
"""Everything the loop itself adds to the update metrics of a step."""


def _nan_like(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), tree)


class StepAction(eqx.Module):
    """What a seed does at one agent step, and the planner Gaussian it stores (`*seed`: a
    leading seed axis when batched)."""

    action: Float[Array, "*seed action"]
    plan_mean: Float[Array, "*seed action"]
    plan_std: Float[Array, "*seed action"]
    warm_start: Float[Array, "*seed horizon action"]


def _planned_action(agent: AgentState, obs, warm, key, cfg: AgentConfig) -> StepAction:
    p = act(agent, obs, warm, cfg=cfg, eval_mode=False, key=key)
    return StepAction(p.action, p.mean[0], p.std[0], shift_warm_start(p.mean))


def _choose_actions(
    seeds: SeedState,
    step: Int[Array, ""],
    keys: Key[Array, " seed"],
    cfg: AgentConfig,
    schedule: Schedule,
) -> StepAction:
    """Uniform random actions in the seed phase (planner statistics N(0, sigma_max), paper
    B.4), planned ones after it. The flag is unbatched, so only one branch runs."""

    def random_actions():
        a = jax.vmap(lambda k: jr.uniform(k, (cfg.action_dim,), minval=-1.0, maxval=1.0))(keys)
        max_std = jnp.full_like(a, cfg.planner.max_std)
        return StepAction(a, jnp.zeros_like(a), max_std, jnp.zeros_like(seeds.warm_start))

    def planned_actions():
        plan_one = lambda *xs: _planned_action(*xs, cfg)
        return eqx.filter_vmap(plan_one)(seeds.agent, seeds.obs, seeds.warm_start, keys)

    return jax.lax.cond(step < schedule.seed_steps, random_actions, planned_actions)


def _train_step(
    state: LoopState,
    env: AbstractEnv,
    vlearn,
    metric_shapes: PyTree,
    cfg: AgentConfig,
    schedule: Schedule,
) -> tuple[LoopState, dict[str, Float[Array, " seed"]]]:
    """One agent step of Algorithm 2 for every seed: act, step the environment, store, learn."""
    seeds = state.seeds
    split = jax.vmap(lambda k: jr.split(k, 3))(seeds.key)
    next_key, act_key, learn_key = split[:, 0], split[:, 1], split[:, 2]
    chosen = _choose_actions(seeds, state.step, act_key, cfg, schedule)
    # A non-finite action never reaches the simulator (MuJoCo rejects it mid-chunk):
    # 0 is sent instead and the step is reported, so the host raises NonFiniteError.
    finite_action = jnp.all(jnp.isfinite(chosen.action), axis=-1)
    action = jnp.where(finite_action[:, None], chosen.action, 0.0)
    env_state, ts = env.step(state.env_state, action)
    stored_term = ts.terminated if cfg.episodic else jnp.zeros_like(ts.terminated)
    transitions = Transition(
        seeds.obs, action, ts.reward, stored_term, chosen.plan_mean, chosen.plan_std,
        seeds.episode_step, ts.done, ts.final_obs,
    )  # fmt: skip
    buffer = eqx.filter_vmap(lambda b, t: b.add(t, placeholder_std=cfg.planner.max_std))(
        seeds.buffer, transitions
    )
    episode_return = seeds.episode_return + ts.reward
    # Over- or under-estimation (a collapse sign): the value estimate at each episode's first
    # state and action next to the discounted return that followed. One value call per step
    # (negligible next to planning); without a bootstrap the realised return misses at most
    # gamma^T of the value (about e^-5 with the discount heuristic).
    value_now = eqx.filter_vmap(
        lambda a, o, u: a.nets.value.estimate(a.nets.two_hot, a.nets.encode(o), u)
    )(seeds.agent, seeds.obs, action)
    first = seeds.episode_step == 0
    # Episodes begun in the seed phase would compare untrained networks: not logged (NaN).
    trained = state.step >= schedule.seed_steps
    episode_q = jnp.where(first, jnp.where(trained, value_now, jnp.nan), seeds.episode_q)
    logged_q = ts.done & jnp.isfinite(episode_q)
    episode_discounted = seeds.episode_discounted + cfg.discount**seeds.episode_step * ts.reward

    # Alg. 2: nothing before seed_steps, a burst of seed_steps updates once the seed data is
    # in, then one update per step with reanalyze every k-th update.
    is_burst = state.step == schedule.seed_steps - 1
    is_update = state.step >= schedule.seed_steps
    num_learn = jnp.where(is_burst, schedule.seed_steps, is_update.astype(jnp.int32))
    k = max(schedule.reanalyze_interval, 1)
    with_reanalyze = is_update & (schedule.reanalyze_interval > 0) & ((state.updates + 1) % k == 0)

    def learn_step(i, carry):
        agent, buf, _ = carry
        keys = jax.vmap(lambda kk: jr.fold_in(kk, i))(learn_key)
        return vlearn(agent, buf, keys, is_burst, with_reanalyze)

    agent, buffer, metrics = filter_fori_loop(
        0, num_learn, learn_step, (seeds.agent, buffer, _nan_like(metric_shapes))
    )
    done = ts.done
    num_seeds = done.shape[0]
    metrics = {
        **metrics,
        "episode_return": jnp.where(done, episode_return, jnp.nan),
        "q_estimate": jnp.where(logged_q, episode_q, jnp.nan),
        "q_realised": jnp.where(logged_q, episode_discounted, jnp.nan),
        "plan_std": jnp.mean(chosen.plan_std, axis=-1),
        # Share of action dimensions whose sigma_0 sits at the planner's floor (a collapse sign).
        "plan_std_at_floor": jnp.mean(chosen.plan_std <= cfg.planner.min_std * (1 + 1e-6), axis=-1),
        "nonfinite_action": (~finite_action).astype(jnp.int32),
        "num_updates": jnp.broadcast_to(num_learn, (num_seeds,)),
        "pretrain": jnp.broadcast_to(is_burst.astype(jnp.int32), (num_seeds,)),
    }
    seeds = SeedState(
        agent=agent,
        buffer=buffer,
        obs=ts.obs,
        warm_start=jnp.where(done[:, None, None], 0.0, chosen.warm_start),
        episode_step=jnp.where(done, 0, seeds.episode_step + 1),
        episode_return=jnp.where(done, 0.0, episode_return),
        episode_discounted=jnp.where(done, 0.0, episode_discounted),
        episode_q=episode_q,
        key=next_key,
    )
    state = LoopState(
        seeds=seeds,
        env_state=env_state,
        step=state.step + 1,
        updates=state.updates + is_update.astype(jnp.int32),
    )
    return state, metrics


def make_train_chunk(cfg: AgentConfig, schedule: Schedule, env: AbstractEnv, num_steps: int):
    """A pure function `LoopState -> (LoopState, per-step metrics)` for `num_steps` agent steps.

    Per-step metrics have shape (num_steps, seed): every update metric (NaN where no update
    ran) and the loop's own `LOOP_METRICS`: `episode_return` (NaN unless an episode ended),
    `plan_std` (mean sigma_0), `plan_std_at_floor` (share of action dimensions with sigma_0 at
    `min_std`), `q_estimate` and `q_realised` (NaN unless an episode begun after the seed phase
    ended: the value estimate at its first state and action, and its discounted return),
    `nonfinite_action` (1 where the agent's action was not finite and 0 was executed),
    `num_updates` and `pretrain` (1 in the pretraining burst).
    """
    vlearn = eqx.filter_vmap(
        lambda a, b, k, pretrain, re: learn(a, b, k, pretrain, re, cfg=cfg, schedule=schedule),
        in_axes=(eqx.if_array(0), eqx.if_array(0), 0, None, None),
    )

    def chunk(state: LoopState) -> tuple[LoopState, dict[str, Float[Array, "step seed"]]]:
        no = jnp.zeros((), bool)
        seeds = state.seeds
        metric_shapes = eqx.filter_eval_shape(vlearn, seeds.agent, seeds.buffer, seeds.key, no, no)[
            2
        ]
        body = lambda st, _: _train_step(st, env, vlearn, metric_shapes, cfg, schedule)
        return filter_scan(body, state, None, length=num_steps)

    return chunk


class EpisodeCarry(eqx.Module):
    """The state of one evaluation episode of every seed."""

    env_state: PyTree
    obs: Float[Array, "seed obs"]
    warm_start: Float[Array, "seed horizon action"]
    episode_return: Float[Array, " seed"]
    finished: Bool[Array, " seed"]
    t: Int[Array, ""]
    key: Key[Array, " seed"]


def _eval_action(agent: AgentState, obs, warm, key, cfg: AgentConfig, policy_only: bool, noisy):
    """Planner in eval mode (no sigma_0 noise unless `noisy`), or the policy's mean action."""
    if policy_only:
        return policy_action(agent, obs), warm
    p = act(agent, obs, warm, cfg=cfg, eval_mode=not noisy, key=key)
    return p.action, shift_warm_start(p.mean)


def _eval_step(
    carry: EpisodeCarry, agents: AgentState, env: AbstractEnv, cfg: AgentConfig, policy_only, noisy
) -> EpisodeCarry:
    """One evaluation step of every seed; finished seeds add no reward."""
    split = jax.vmap(lambda kk: jr.split(kk, 2))(carry.key)
    key, step_keys = split[:, 0], split[:, 1]
    action, warm = eqx.filter_vmap(lambda *xs: _eval_action(*xs, cfg, policy_only, noisy))(
        agents, carry.obs, carry.warm_start, step_keys
    )
    env_state, ts = env.step(carry.env_state, action)
    episode_return = carry.episode_return + jnp.where(carry.finished, 0.0, ts.reward)
    return EpisodeCarry(
        env_state, ts.obs, warm, episode_return, carry.finished | ts.done, carry.t + 1, key
    )


def make_evaluate(
    cfg: AgentConfig, env: AbstractEnv, num_episodes: int, *, policy_only=False, noisy=False
):
    """A pure function `(agents, keys) -> returns (seed, episode)` of full episodes on `env`
    (not the training env): the planner in eval mode (no sigma_0 noise; with `noisy` as in
    training), or with `policy_only` the sampling policy's mean action (BMPC's `eval_pi`)."""
    horizon, action_dim = cfg.planner.horizon, cfg.action_dim
    max_len = env.spec.episode_length

    def episode(agents: AgentState, keys: Key[Array, " seed"]) -> Float[Array, " seed"]:
        num = keys.shape[0]
        reset_keys, plan_keys = _split2(keys)
        env_state, obs = env.reset(reset_keys)
        init = EpisodeCarry(
            env_state, obs, jnp.zeros((num, horizon, action_dim)), jnp.zeros((num,)),
            jnp.zeros((num,), bool), jnp.zeros((), jnp.int32), plan_keys,
        )  # fmt: skip
        running = lambda c: (c.t < max_len) & ~jnp.all(c.finished)
        step = lambda c: _eval_step(c, agents, env, cfg, policy_only, noisy)
        return jax.lax.while_loop(running, step, init).episode_return

    def evaluate(agents: AgentState, keys: Key[Array, " seed"]) -> Float[Array, "seed episode"]:
        episode_keys = jax.vmap(lambda k: jr.split(k, num_episodes))(keys)  # (seed, episode)
        _, returns = jax.lax.scan(
            lambda _, ks: (None, episode(agents, ks)), None, jnp.swapaxes(episode_keys, 0, 1)
        )
        return jnp.swapaxes(returns, 0, 1)

    return evaluate


def _split2(keys: Key[Array, " seed"]) -> tuple[Key[Array, " seed"], Key[Array, " seed"]]:
    split = jax.vmap(lambda k: jr.split(k, 2))(keys)
    return split[:, 0], split[:, 1]


def all_finite(tree: PyTree) -> Bool[Array, ""]:
    """Whether every floating-point array in `tree` is finite."""
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
