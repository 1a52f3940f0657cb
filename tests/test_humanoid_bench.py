"""HumanoidBench adapter: against a test-only fake of the package, and against the real
package when it is installed (those tests skip otherwise)."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import rollout

from pompc_eqx.envs import EnvSpec, MissingDependencyError, UnknownTaskError, make_env, task_spec
from pompc_eqx.envs.host import slot_seeds
from pompc_eqx.envs.humanoid_bench import (
    H1HAND_LOCOMOTION_TASKS,
    humanoid_bench_available,
    import_humanoid_bench,
)


gym = pytest.importorskip("gymnasium")


def _load_fake():
    path = Path(__file__).parent / "fakes" / "fake_humanoid_bench.py"
    spec = importlib.util.spec_from_file_location("fake_humanoid_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake = _load_fake()


@pytest.fixture
def fake_hb(monkeypatch):
    """Install the fake as `humanoid_bench` and register its ids, for one test."""
    monkeypatch.setitem(sys.modules, "humanoid_bench", fake)
    for env_id, entry in fake.registry_entries().items():
        monkeypatch.setitem(gym.registry, env_id, entry)
    return fake


@pytest.fixture
def real_hb():
    try:
        return import_humanoid_bench()
    except MissingDependencyError as error:
        pytest.skip(f"HumanoidBench is not installed ({error})")


def _direct_fake(seed: int):
    """A fake env reset the way a slot seeded with `seed` is (global RNG seeded too)."""
    env = fake.FakeHumanoidEnv()
    outer = np.random.get_state()
    np.random.seed(seed)
    obs, _ = env.reset(seed=seed)
    np.random.set_state(outer)
    return env, obs


def _assert_one_line_install_hint(message: str):
    assert "\n" not in message
    assert "https://github.com/carlosferrazza/humanoid-bench" in message
    assert "pip install --no-deps -e <clone>" in message
    assert 'pip install "pompc-eqx[humanoid]"' in message


def test_missing_package_error_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "humanoid_bench", None)  # makes `import humanoid_bench` fail
    with pytest.raises(MissingDependencyError) as info:
        make_env("hb/h1hand-walk-v0", 1)
    assert isinstance(info.value, ImportError)
    assert "not installed" in str(info.value)
    _assert_one_line_install_hint(str(info.value))
    with pytest.raises(MissingDependencyError):
        task_spec("hb/h1hand-walk-v0")
    assert not humanoid_bench_available()


def test_missing_gymnasium_error_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(MissingDependencyError) as info:
        make_env("hb/h1hand-walk-v0", 1)
    assert "gymnasium" in str(info.value)
    _assert_one_line_install_hint(str(info.value))


def test_fake_spec_and_observations(fake_hb):
    env = make_env("hb/h1hand-walk-v0", 2)
    expected = EnvSpec("hb/h1hand-walk-v0", fake.OBS_DIM, fake.ACTION_DIM, 1000, 1, True)
    assert env.spec == expected
    assert task_spec("hb/h1hand-walk-v0") == expected
    keys = jr.split(jr.key(0), 2)
    state, obs = env.reset(keys)
    seeds = [int(s) for s in slot_seeds(keys)]
    direct = [_direct_fake(seed) for seed in seeds]
    for slot, (_, direct_obs) in enumerate(direct):
        np.testing.assert_array_equal(obs[slot], direct_obs.astype(np.float32))
    assert not np.array_equal(obs[0], obs[1])
    for action in np.random.default_rng(0).uniform(-1, 1, (5, 2, 1)).astype(np.float32):
        state, timestep = env.step(state, jnp.asarray(action))
        for slot, (direct_env, _) in enumerate(direct):
            direct_obs, reward, terminated, _, _ = direct_env.step(action[slot])
            np.testing.assert_array_equal(timestep.obs[slot], direct_obs.astype(np.float32))
            assert timestep.reward[slot] == np.float32(reward)
            assert bool(timestep.terminated[slot]) == terminated


def test_fake_termination_ends_the_episode_and_auto_resets(fake_hb):
    env = make_env("hb/h1hand-walk-v0", 2)
    _, _, timesteps, t = rollout(env, jr.split(jr.key(1), 2), jnp.zeros((40, 2, 1)))
    terminated = np.asarray(timesteps.terminated)
    assert not bool(jnp.any(timesteps.truncated))
    for slot in range(2):
        ends = np.nonzero(terminated[:, slot])[0]
        assert len(ends) >= 2, "falling with zero action must terminate repeatedly"
        first = ends[0]
        assert t[first, slot] == 0 and t[first - 1, slot] == first
        assert timesteps.final_obs[first, slot, 0] < fake.FALL_HEIGHT
        assert timesteps.obs[first, slot, 0] > 0.9, "the next observation starts a new episode"
        # A new goal is drawn from the slot's own global-RNG stream at every reset.
        assert not np.array_equal(timesteps.obs[first, slot, 2:], timesteps.obs[ends[1], slot, 2:])
    np.testing.assert_array_equal(timesteps.obs[~terminated], timesteps.final_obs[~terminated])


def test_fake_truncates_at_1000_steps(fake_hb):
    env = make_env("hb/h1hand-walk-v0", 1)
    _, _, timesteps, t = rollout(env, jr.split(jr.key(2), 1), jnp.ones((1002, 1, 1)))
    assert np.nonzero(np.asarray(timesteps.truncated[:, 0]))[0].tolist() == [999]
    assert not bool(jnp.any(timesteps.terminated))
    assert t[999, 0] == 0 and t[1001, 0] == 2
    assert timesteps.final_obs[999, 0, 0] > 2.0 and abs(timesteps.obs[999, 0, 0] - 1.0) < 0.1


def test_fake_save_load_replays_through_a_termination(fake_hb):
    env = make_env("hb/h1hand-walk-v0", 2)
    step = jax.jit(lambda s, a: jax.lax.scan(env.step, s, a))
    state, _ = env.reset(jr.split(jr.key(3), 2))
    state, _ = step(state, jnp.zeros((3, 2, 1)))
    blob = env.save_host_state()
    actions = jnp.zeros((15, 2, 1))
    _, expected = step(state, actions)
    assert bool(jnp.any(expected.terminated))
    fresh = make_env("hb/h1hand-walk-v0", 2)
    fresh.load_host_state(blob)
    _, replayed = jax.jit(lambda s, a: jax.lax.scan(fresh.step, s, a))(state, actions)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(replayed)):
        np.testing.assert_array_equal(a, b)


def test_fake_leaves_numpy_global_random_alone(fake_hb):
    np.random.seed(123)
    before = np.random.get_state()
    env = make_env("hb/h1hand-walk-v0", 2)
    state, _ = env.reset(jr.split(jr.key(4), 2))
    env.step(state, jnp.zeros((2, 1)))
    after = np.random.get_state()
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_fake_unknown_task(fake_hb):
    with pytest.raises(UnknownTaskError) as info:
        make_env("hb/h1hand-wlak-v0", 1)
    assert "\n" not in str(info.value)
    assert "hb/h1hand-walk-v0" in str(info.value)


def test_real_h1hand_walk(real_hb):
    env = make_env("hb/h1hand-walk-v0", 2)
    assert env.spec == EnvSpec("hb/h1hand-walk-v0", 151, 61, 1000, 1, True)
    actions = jr.uniform(jr.key(5), (150, 2, 61), minval=-1.0, maxval=1.0)
    _, _, timesteps, t = rollout(env, jr.split(jr.key(6), 2), actions)
    assert bool(jnp.all(jnp.isfinite(timesteps.obs)))
    # Random actions make h1hand fall within about 100 steps.
    ends = np.nonzero(np.asarray(timesteps.terminated[:, 0]))[0]
    assert len(ends) >= 1 and t[ends[0], 0] == 0
    assert not np.array_equal(timesteps.obs[ends[0], 0], timesteps.final_obs[ends[0], 0])


def test_real_save_load_replays(real_hb):
    env = make_env("hb/h1hand-walk-v0", 1)
    step = jax.jit(lambda s, a: jax.lax.scan(env.step, s, a))
    state, _ = env.reset(jr.split(jr.key(7), 1))
    state, _ = step(state, jnp.zeros((5, 1, 61)))
    blob = env.save_host_state()
    actions = jr.uniform(jr.key(8), (10, 1, 61), minval=-1.0, maxval=1.0)
    _, expected = step(state, actions)
    env.load_host_state(blob)
    _, replayed = step(state, actions)
    np.testing.assert_array_equal(expected.obs, replayed.obs)
    np.testing.assert_array_equal(expected.reward, replayed.reward)


@pytest.mark.parametrize("name", H1HAND_LOCOMOTION_TASKS)
def test_real_locomotion_tasks_step(real_hb, name):
    env = make_env(name, 1)
    assert (env.spec.action_dim, env.spec.episode_length, env.spec.action_repeat) == (61, 1000, 1)
    state, obs = env.reset(jr.split(jr.key(9), 1))
    state, timestep = env.step(state, jnp.zeros((1, 61)))
    assert obs.shape == timestep.obs.shape == (1, env.spec.obs_dim)
    assert bool(jnp.all(jnp.isfinite(timestep.obs))) and bool(jnp.isfinite(timestep.reward[0]))


_RENDER_SCRIPT = textwrap.dedent(
    """
    import jax.random as jr
    from pompc_eqx.envs import make_env
    env = make_env("hb/h1hand-walk-v0", 1)
    env.reset(jr.split(jr.key(0), 1))
    frame = env.render(0, 48, 64)
    print("FRAME", frame.shape, frame.dtype, int(frame.std() > 1))
    """
)


def test_real_render(real_hb):
    # MuJoCo picks its GL backend at import, so render in a child process with MUJOCO_GL set.
    result = subprocess.run(
        [sys.executable, "-c", _RENDER_SCRIPT],
        env={**os.environ, "MUJOCO_GL": "egl"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0 and ("EGL" in result.stderr or "OpenGL" in result.stderr):
        last_line = result.stderr.strip().splitlines()[-1]
        pytest.skip(f"no EGL backend for headless rendering: {last_line}")
    assert result.returncode == 0, result.stderr
    assert "FRAME (48, 64, 3) uint8 1" in result.stdout
