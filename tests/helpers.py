"""Small helpers shared by several test modules."""

import dataclasses

import equinox as eqx
import jax

from pompc_eqx.buffer import default_capacity
from pompc_eqx.envs.registry import make_env, task_spec
from pompc_eqx.loop import Schedule, init_loop, seed_keys
from pompc_eqx.presets import PRESETS


def rollout(env, keys, actions):
    """Reset `env` with `keys`, then step through `actions` (time, seed, action) in one jit.

    **Returns:** `(first obs, final env state, stacked TimeSteps, stacked step counters)`.
    """

    @jax.jit
    def run(keys, actions):
        state, obs = env.reset(keys)

        def body(state, action):
            state, timestep = env.step(state, action)
            return state, (timestep, state.t)

        final_state, (timesteps, t) = jax.lax.scan(body, state, actions)
        return obs, final_state, timesteps, t

    return run(keys, actions)


def tiny_agent_config(
    preset: str = "pompc",
    task: str = "jax/pendulum",
    *,
    num_samples: int = 32,
    num_elites: int = 4,
    num_pi_trajs: int = 4,
    iterations: int = 2,
    batch_size: int = 16,
    **overrides,
):
    """The `AgentConfig` of `preset` on `task` at the tiny size with a small planner and batch,
    so that it compiles and runs in seconds."""
    base = PRESETS[preset][1]
    planner = dataclasses.replace(
        base.planner,
        num_samples=num_samples,
        num_elites=num_elites,
        num_pi_trajs=num_pi_trajs,
        iterations=iterations,
    )
    buffer = dataclasses.replace(
        base.buffer, batch_size=batch_size, reanalyze_batch=min(4, batch_size), reanalyze_interval=2
    )
    cfg = dataclasses.replace(base, model_size="tiny", planner=planner, buffer=buffer, **overrides)
    spec = task_spec(task)
    return cfg.agent_config(spec.obs_dim, spec.action_dim, spec.episode_length)


def start_loop(
    cfg, task: str, *, num_seeds: int, steps: int, seed_steps: int, reanalyze: bool = True
):
    """Fresh loop state of `num_seeds` seeds on `task` and the `Schedule` it runs under."""
    env = make_env(task, num_seeds)
    schedule = Schedule(
        seed_steps=seed_steps,
        capacity=default_capacity(steps, env.spec.episode_length),
        reanalyze_interval=2 if reanalyze else 0,
        reanalyze_batch=4,
    )
    state = eqx.filter_jit(init_loop)(cfg, schedule, env, seed_keys(0, num_seeds))
    return env, schedule, state
