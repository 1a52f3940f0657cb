"""Environments: JAX-native tasks, dm_control through the batched io_callback, the registry."""

import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from dm_control import suite
from helpers import rollout

from pompc_eqx.envs import (
    JAX_TASKS,
    PROBE_OPTIMAL_RETURNS,
    EnvSpec,
    UnknownTaskError,
    canonical_task_name,
    list_tasks,
    make_env,
    task_spec,
)
from pompc_eqx.envs.dmc import DMC_TASKS, parse_dmc_task
from pompc_eqx.envs.host import slot_seeds
from pompc_eqx.envs.jax_envs import Pendulum


def _assert_trees_equal(first, second):
    leaves = lambda tree: [
        jr.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        for x in jax.tree.leaves(tree)
    ]
    for a, b in zip(leaves(first), leaves(second), strict=True):
        np.testing.assert_array_equal(a, b)


def _flat(observation) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in observation.values()]).astype(np.float32)


def _raw_env(domain: str, task: str, seed: int):
    return suite.load(domain, task, task_kwargs={"random": seed})


def _uniform_actions(key, num_steps: int, num_envs: int, action_dim: int):
    return jr.uniform(key, (num_steps, num_envs, action_dim), minval=-1.0, maxval=1.0)


def _pendulum_reference_step(theta, theta_dot, torque):
    """gym Pendulum-v1 `step`, transcribed with numpy (float64)."""
    g, m, length, dt = 10.0, 1.0, 1.0, 0.05
    torque = np.clip(torque, -2.0, 2.0)
    normalized = ((theta + np.pi) % (2 * np.pi)) - np.pi
    cost = normalized**2 + 0.1 * theta_dot**2 + 0.001 * torque**2
    new_theta_dot = (
        theta_dot + (3 * g / (2 * length) * np.sin(theta) + 3.0 / (m * length**2) * torque) * dt
    )
    new_theta_dot = np.clip(new_theta_dot, -8.0, 8.0)
    new_theta = theta + new_theta_dot * dt
    return new_theta, new_theta_dot, -cost


def test_pendulum_matches_gym_dynamics():
    rng = np.random.default_rng(0)
    task = Pendulum()
    for _ in range(20):
        theta, theta_dot = rng.uniform(-4, 4), rng.uniform(-8, 8)
        action = rng.uniform(-1, 1)
        physics, obs, reward, terminated = task.step(
            jnp.array([theta, theta_dot], jnp.float32),
            jnp.array([action], jnp.float32),
            key=jr.key(0),
        )
        new_theta, new_theta_dot, ref_reward = _pendulum_reference_step(
            theta, theta_dot, 2.0 * action
        )
        np.testing.assert_allclose(
            obs, [np.cos(new_theta), np.sin(new_theta), new_theta_dot], atol=1e-4
        )
        np.testing.assert_allclose(reward, ref_reward, rtol=1e-4, atol=1e-4)
        assert obs.dtype == jnp.float32 and not terminated


def _pendulum_controller(obs):
    """Energy pumping far from upright, PD control near it; torque in [-2, 2] scaled to [-1, 1]."""
    cos, sin, theta_dot = obs[:, 0], obs[:, 1], obs[:, 2]
    theta = jnp.arctan2(sin, cos)
    # Energy per unit inertia: theta'' = 15 sin(theta) + 3 u, so E = theta_dot^2 / 2 + 15 cos.
    energy = 0.5 * theta_dot**2 + 15.0 * cos
    direction = jnp.where(theta_dot >= 0, 1.0, -1.0)
    pump = jnp.clip(0.5 * (15.0 - energy) * direction, -2.0, 2.0)
    hold = jnp.clip(-(10.0 * theta + 2.0 * theta_dot), -2.0, 2.0)
    torque = jnp.where(cos > 0.85, hold, pump)
    return (torque / 2.0)[:, None]


def _pendulum_mean_return(policy, *, key, num_envs: int = 32) -> float:
    env = make_env("jax/pendulum", num_envs)
    reset_key, policy_key = jr.split(key)

    @jax.jit
    def run():
        state, obs = env.reset(jr.split(reset_key, num_envs))

        def body(carry, step_key):
            state, obs = carry
            state, timestep = env.step(state, policy(obs, step_key))
            return (state, timestep.obs), (timestep.reward, timestep.done)

        _, (rewards, done) = jax.lax.scan(body, (state, obs), jr.split(policy_key, 200))
        return rewards, done

    rewards, done = run()
    assert bool(jnp.all(done[-1])) and not bool(jnp.any(done[:-1])), "episodes must last 200 steps"
    return float(jnp.mean(jnp.sum(rewards, axis=0)))


def test_pendulum_random_policy_return_is_plausible():
    random_policy = lambda obs, key: jr.uniform(key, (obs.shape[0], 1), minval=-1.0, maxval=1.0)
    mean_return = _pendulum_mean_return(random_policy, key=jr.key(1))
    assert -1600.0 <= mean_return <= -800.0, mean_return


def test_pendulum_controller_solves_it():
    mean_return = _pendulum_mean_return(lambda obs, key: _pendulum_controller(obs), key=jr.key(2))
    assert mean_return >= -400.0, mean_return


@pytest.mark.parametrize("name", sorted(PROBE_OPTIMAL_RETURNS))
def test_probe_optimal_return(name):
    env = make_env(name, 4)
    length = env.spec.episode_length
    assert length >= 4, "training samples subsequences of 4 observations within an episode"

    @jax.jit
    def run(key):
        state, obs = env.reset(jr.split(key, 4))

        def body(carry, _):
            state, obs = carry
            # The target probe's optimal action is its observation; the trap probe's is "safe"
            # (0) until the last step (1/10 of the episode left), then the trap (-1); the
            # others ignore actions.
            action = obs if name == "jax/probe-target" else jnp.zeros((4, 1))
            if name == "jax/probe-trap":
                action = jnp.where(obs < 0.15, -1.0, 0.0)
            state, timestep = env.step(state, action)
            return (state, timestep.obs), (timestep.reward, timestep.terminated, timestep.truncated)

        _, outs = jax.lax.scan(body, (state, obs), None, length=length)
        return outs

    rewards, terminated, truncated = run(jr.key(3))
    np.testing.assert_allclose(jnp.sum(rewards, axis=0), PROBE_OPTIMAL_RETURNS[name], rtol=1e-6)
    done = terminated | truncated
    assert bool(jnp.all(done[-1])) and not bool(jnp.any(done[:-1]))
    # Countdown and the trap end in a true terminal state; the others are cut by the time limit.
    assert bool(jnp.all(terminated[-1])) == (name in ("jax/probe-countdown", "jax/probe-trap"))
    assert not bool(jnp.any(terminated[-1] & truncated[-1]))


def test_target_probe_random_policy_is_suboptimal():
    env = make_env("jax/probe-target", 64)
    actions = _uniform_actions(jr.key(4), env.spec.episode_length, 64, 2)
    _, _, timesteps, _ = rollout(env, jr.split(jr.key(5), 64), actions)
    mean_return = float(jnp.mean(jnp.sum(timesteps.reward, axis=0)))
    assert mean_return < 0.6 * PROBE_OPTIMAL_RETURNS["jax/probe-target"], mean_return


def test_jax_env_auto_resets_with_fresh_keys():
    env = make_env("jax/pendulum", 2)
    actions = jnp.zeros((401, 2, 1))
    _, _, timesteps, t = rollout(env, jr.split(jr.key(6), 2), actions)
    assert np.nonzero(np.asarray(timesteps.truncated[:, 0]))[0].tolist() == [199, 399]
    assert t[199].tolist() == [0, 0] and t[200].tolist() == [1, 1]
    # The two auto-resets drew different start states, and differ from the step they replaced.
    assert not np.array_equal(timesteps.obs[199], timesteps.obs[399])
    assert not np.array_equal(timesteps.obs[199], timesteps.final_obs[199])
    np.testing.assert_array_equal(timesteps.obs[:199], timesteps.final_obs[:199])


def test_jax_env_save_host_state_is_none():
    env = make_env("jax/pendulum", 1)
    assert env.save_host_state() is None
    env.load_host_state(None)
    with pytest.raises(ValueError, match="no host state"):
        env.load_host_state(b"x")


@pytest.mark.parametrize(
    "name, dims",
    [
        ("dmc/cartpole-swingup", (5, 1)),
        ("dmc/walker-walk", (24, 6)),
        ("dmc/humanoid-walk", (67, 21)),
        ("dmc/dog-run", (223, 38)),
    ],
)
@pytest.mark.slow
def test_dmc_dims_match_dm_control(name, dims):
    domain, task = parse_dmc_task(name)
    raw = suite.load(domain, task)
    raw_obs_dim = sum(int(np.prod(s.shape)) for s in raw.observation_spec().values())
    assert (raw_obs_dim, raw.action_spec().shape[0]) == dims
    env = make_env(name, 1)
    assert env.spec == EnvSpec(name, *dims, episode_length=500, action_repeat=2)
    assert task_spec(name) == env.spec
    _, obs = env.reset(jr.split(jr.key(0), 1))
    assert obs.shape == (1, dims[0]) and obs.dtype == jnp.float32


@pytest.mark.parametrize("name", ["dmc/cartpole-swingup", "dmc/walker-walk"])
def test_dmc_action_repeat_sums_rewards(name):
    domain, task = parse_dmc_task(name)
    env = make_env(name, 1)
    keys = jr.split(jr.key(7), 1)
    raw = _raw_env(domain, task, int(slot_seeds(keys)[0]))
    state, obs = env.reset(keys)
    np.testing.assert_array_equal(obs[0], _flat(raw.reset().observation))
    actions = (
        np.random.default_rng(0).uniform(-1, 1, (30, 1, env.spec.action_dim)).astype(np.float32)
    )
    single_step_rewards_differ = False
    for action in actions:
        state, timestep = env.step(state, jnp.asarray(action))
        first = raw.step(action[0].astype(np.float64))
        second = raw.step(action[0].astype(np.float64))
        assert timestep.reward[0] == np.float32(first.reward + second.reward)
        np.testing.assert_array_equal(timestep.obs[0], _flat(second.observation))
        single_step_rewards_differ |= timestep.reward[0] != np.float32(second.reward)
    assert single_step_rewards_differ


def test_dmc_episode_is_500_agent_steps_then_auto_resets():
    env = make_env("dmc/cartpole-swingup", 2)
    keys = jr.split(jr.key(8), 2)
    actions = _uniform_actions(jr.key(9), 505, 2, 1)
    _, _, timesteps, t = rollout(env, keys, actions)
    for slot in range(2):
        assert np.nonzero(np.asarray(timesteps.truncated[:, slot]))[0].tolist() == [499]
    assert not bool(jnp.any(timesteps.terminated))
    assert t[:, 0].tolist() == [*range(1, 500), 0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(timesteps.obs[:499], timesteps.final_obs[:499])
    # The observation after step 500 is the start of a fresh episode: replay slot 0 on a raw
    # dm_control env seeded identically; its next reset continues the same random stream.
    raw = _raw_env("cartpole", "swingup", int(slot_seeds(keys)[0]))
    raw.reset()
    for action in np.asarray(actions[:500, 0], np.float64):
        raw.step(action)
        last = raw.step(action)
    np.testing.assert_array_equal(timesteps.final_obs[499, 0], _flat(last.observation))
    np.testing.assert_array_equal(timesteps.obs[499, 0], _flat(raw.reset().observation))
    assert not np.array_equal(timesteps.obs[499, 0], timesteps.final_obs[499, 0])


@pytest.mark.parametrize("name", ["jax/pendulum", "dmc/cartpole-swingup"])
def test_same_seed_same_trajectory(name):
    keys = jr.split(jr.key(10), 2)
    spec = task_spec(name)
    actions = _uniform_actions(jr.key(11), 60, 2, spec.action_dim)
    first = rollout(make_env(name, 2), keys, actions)
    second = rollout(make_env(name, 2), keys, actions)
    _assert_trees_equal(first, second)
    obs = first[2].obs
    assert not np.array_equal(obs[:, 0], obs[:, 1]), "slots must get different seeds"
    other = rollout(make_env(name, 2), jr.split(jr.key(12), 2), actions)
    assert not np.array_equal(other[2].obs, obs), "different keys must give different episodes"


def test_host_env_steps_inside_cond():
    env = make_env("dmc/cartpole-swingup", 2)
    action = jnp.zeros((2, 1))

    @jax.jit
    def maybe_step(state, do_step):
        return jax.lax.cond(do_step, lambda s: env.step(s, action)[0], lambda s: s, state)

    state, _ = env.reset(jr.split(jr.key(13), 2))
    for do_step, expected in [(True, 1), (False, 1), (True, 2)]:
        state = maybe_step(state, do_step)
        assert state.t.tolist() == [expected, expected]
        assert env.host.t.tolist() == [expected, expected]


def test_host_env_reset_after_steps_in_one_program():
    # Evaluation resets inside a scan, after the previous episode's steps on the same
    # simulators: the calls must run in program order.
    env = make_env("dmc/cartpole-swingup", 1)

    def episode(_, key):
        state, obs = env.reset(key[None])

        def body(carry):
            state, total, t = carry
            state, timestep = env.step(state, jnp.full((1, 1), 0.5))
            return state, total + timestep.reward, t + 1

        _, total, _ = jax.lax.while_loop(lambda c: c[2] < 20, body, (state, jnp.zeros(1), 0))
        return None, (obs, total)

    keys = jr.split(jr.key(21), 3)
    obs, totals = jax.jit(lambda k: jax.lax.scan(episode, None, k)[1])(keys)
    alone = jax.jit(lambda k: episode(None, k)[1])
    for i in range(3):
        _assert_trees_equal((obs[i], totals[i]), alone(keys[i]))
    assert not np.array_equal(obs[0], obs[1])


def test_host_env_is_a_static_argument_of_filter_jit():
    env = make_env("dmc/cartpole-swingup", 2)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def reset_and_step(env, keys):
        state, _ = env.reset(keys)
        return env.step(state, jnp.zeros((2, 1)))

    for seed in range(2):
        state, timestep = reset_and_step(env, jr.split(jr.key(seed), 2))
        assert state.t.tolist() == [1, 1] and timestep.obs.shape == (2, 5)
    assert hash(env) == hash(env) and env != make_env("dmc/cartpole-swingup", 2)


def test_host_env_rejects_stale_state():
    env = make_env("dmc/cartpole-swingup", 1)
    state, _ = env.reset(jr.split(jr.key(14), 1))
    env.step(state, jnp.zeros((1, 1)))
    with pytest.raises(Exception, match="cannot go back in time"):
        jax.block_until_ready(env.step(state, jnp.zeros((1, 1))))


def test_save_load_host_state_replays_identically():
    env = make_env("dmc/cartpole-swingup", 2)
    state, _ = env.reset(jr.split(jr.key(15), 2))
    step = jax.jit(env.step)
    for action in _uniform_actions(jr.key(16), 5, 2, 1):
        state, _ = step(state, action)
    blob = env.save_host_state()
    saved_state = state
    actions = _uniform_actions(jr.key(17), 8, 2, 1)
    first = []
    for action in actions:
        state, timestep = step(state, action)
        first.append(timestep)
    env.load_host_state(blob)
    state = saved_state
    for action, expected in zip(actions, first):
        state, timestep = step(state, action)
        np.testing.assert_array_equal(timestep.obs, expected.obs)
        np.testing.assert_array_equal(timestep.reward, expected.reward)


def test_host_state_moves_to_a_fresh_instance_across_an_episode_end():
    # reacher keeps its per-episode target in the model, and auto-resets draw from the task's
    # RandomState: both must travel with the host state.
    keys = jr.split(jr.key(18), 2)
    env = make_env("dmc/reacher-easy", 2)
    _, state, _, _ = rollout(env, keys, _uniform_actions(jr.key(19), 495, 2, 2))
    blob = env.save_host_state()
    later = _uniform_actions(jr.key(20), 10, 2, 2)
    step = lambda env: jax.jit(lambda s, a: jax.lax.scan(lambda s, a: env.step(s, a), s, a))
    _, expected = step(env)(state, later)
    assert bool(jnp.any(expected.truncated)), "the replay must cross an episode boundary"
    fresh = make_env("dmc/reacher-easy", 2)
    fresh.load_host_state(blob)
    _, replayed = step(fresh)(state, later)
    _assert_trees_equal(expected, replayed)


def test_load_host_state_rejects_another_task():
    blob = make_env("dmc/cartpole-swingup", 1).save_host_state()
    with pytest.raises(ValueError, match="same task and num_envs"):
        make_env("dmc/cartpole-balance", 1).load_host_state(blob)
    with pytest.raises(ValueError, match="same task and num_envs"):
        make_env("dmc/cartpole-swingup", 2).load_host_state(blob)


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("dmc/cup-catch", "dmc/ball_in_cup-catch"),
        ("dmc/cartpole-swingup-sparse", "dmc/cartpole-swingup_sparse"),
        ("dmc/pointmass-easy", "dmc/point_mass-easy"),
        ("dmc/ball-in-cup-catch", "dmc/ball_in_cup-catch"),
        ("dmc/walker-walk", "dmc/walker-walk"),
    ],
)
def test_dmc_aliases(alias, canonical):
    assert canonical_task_name(alias) == canonical
    assert canonical in DMC_TASKS
    assert task_spec(alias).obs_dim == task_spec(canonical).obs_dim
    assert task_spec(alias).name == alias


@pytest.mark.slow
def test_dmc_task_list_is_the_whole_suite():
    assert sorted(DMC_TASKS) == sorted(f"dmc/{d}-{t}" for d, t in suite.ALL_TASKS)
    specs = {spec.name: spec for spec in list_tasks()}
    assert set(JAX_TASKS) | set(DMC_TASKS) <= set(specs)
    assert specs["dmc/quadruped-run"].action_dim == 12
    assert all(
        specs[name].action_repeat == 2 and specs[name].episode_length == 500 for name in DMC_TASKS
    )


@pytest.mark.parametrize(
    "name, expected_match",
    [
        ("dmc/cartpol-swingup", "dmc/cartpole-swingup"),
        ("cartpole-swingup", "dmc/cartpole-swingup"),
        ("jax/pendulm", "jax/pendulum"),
        ("gym/Pendulum-v1", None),
    ],
)
def test_unknown_task_error(name, expected_match):
    with pytest.raises(UnknownTaskError) as info:
        make_env(name, 1)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message
    assert all(prefix in message for prefix in ("'jax/'", "'dmc/'", "'hb/'"))
    if expected_match is not None:
        assert expected_match in message.split("closest matches:")[1]


def test_make_env_rejects_unknown_options():
    with pytest.raises(TypeError, match="episodic"):
        make_env("jax/pendulum", 1, episodic=True)


def test_reset_needs_one_key_per_slot():
    with pytest.raises(ValueError, match="one key per slot"):
        make_env("dmc/cartpole-swingup", 2).reset(jr.split(jr.key(0), 3))
    with pytest.raises(ValueError, match="one key per slot"):
        make_env("jax/pendulum", 2).reset(jr.split(jr.key(0), 3))


_RENDER_SCRIPT = textwrap.dedent(
    """
    import jax.random as jr
    from pompc_eqx.envs import make_env
    env = make_env("dmc/cartpole-swingup", 1)
    env.reset(jr.split(jr.key(0), 1))
    frame = env.render(0, 48, 64)
    print("FRAME", frame.shape, frame.dtype, int(frame.std() > 1))
    """
)


@pytest.mark.slow
def test_render_host_env():
    # MuJoCo picks its GL backend at import, so render in a child process with MUJOCO_GL set.
    result = subprocess.run(
        [sys.executable, "-c", _RENDER_SCRIPT],
        env={**os.environ, "MUJOCO_GL": "egl"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0 and ("EGL" in result.stderr or "OpenGL" in result.stderr):
        pytest.skip(
            f"no EGL backend for headless rendering: {result.stderr.strip().splitlines()[-1]}"
        )
    assert result.returncode == 0, result.stderr
    assert "FRAME (48, 64, 3) uint8 1" in result.stdout
