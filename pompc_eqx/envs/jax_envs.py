"""JAX-native tasks: pure single-episode dynamics, batched over seeds by `JaxEnv`.

A task only describes one episode (`init` and `step` on unbatched arrays). `JaxEnv` vmaps it
over the `seed` axis, counts agent steps, applies the time limit and auto-resets finished
episodes with a fresh key, so everything runs on device inside `jit`/`lax.scan`.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, Int, Key, PyTree

from .base import AbstractEnv, EnvSpec, TimeStep


class AbstractJaxTask(eqx.Module):
    """Single-episode dynamics of a JAX-native task (unbatched; `JaxEnv` adds the seed axis).

    Actions passed to `step` are already clipped to [-1, 1]. Observations and rewards must be
    float32. The time limit is applied by `JaxEnv`, not by the task.
    """

    obs_dim: eqx.AbstractVar[int]
    action_dim: eqx.AbstractVar[int]
    episode_length: eqx.AbstractVar[int]
    can_terminate: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def init(self, *, key: Key[Array, ""]) -> tuple[PyTree, Float[Array, " obs"]]:
        """Sample the start of an episode.

        **Arguments:**
        - `key`: randomness for the initial state.

        **Returns:** `(physics, obs)`: the task's internal state and the first observation.
        """

    @abc.abstractmethod
    def step(
        self, physics: PyTree, action: Float[Array, " action"], *, key: Key[Array, ""]
    ) -> tuple[PyTree, Float[Array, " obs"], Float[Array, ""], Bool[Array, ""]]:
        """Advance one agent step.

        **Arguments:**
        - `physics`: the state returned by `init` or a previous `step`.
        - `action`: an action in [-1, 1].
        - `key`: randomness for this transition (unused by deterministic tasks).

        **Returns:** `(physics, obs, reward, terminated)`.
        """


class JaxEnvState(eqx.Module):
    """Device-side state of a `JaxEnv`: every leaf has a leading `seed` axis."""

    physics: PyTree
    t: Int[Array, " seed"]
    key: Key[Array, " seed"]


class JaxEnv(AbstractEnv):
    """`num_envs` independent episodes of a JAX-native task, vmapped over seeds.

    Slot `i` draws its first episode from `key[i]` at `reset`; later episodes (auto-resets) and
    stochastic transitions use keys split from a per-slot key carried in `JaxEnvState`.

    **Arguments:**
    - `task`: the single-episode dynamics.
    - `num_envs`: number of seeds (slots) stepped together.
    - `name`: the task name, stored in `spec.name`.
    """

    task: AbstractJaxTask
    spec: EnvSpec = eqx.field(static=True)
    num_envs: int = eqx.field(static=True)

    def __init__(self, task: AbstractJaxTask, num_envs: int, *, name: str):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.task = task
        self.num_envs = num_envs
        self.spec = EnvSpec(
            name=name,
            obs_dim=task.obs_dim,
            action_dim=task.action_dim,
            episode_length=task.episode_length,
            action_repeat=1,
            can_terminate=task.can_terminate,
        )

    def reset(self, key: Key[Array, " seed"]) -> tuple[JaxEnvState, Float[Array, "seed obs"]]:
        _check_num_keys(key, self.num_envs)
        init_keys, carry_keys = _split_each(key, 2)
        physics, obs = jax.vmap(lambda k: self.task.init(key=k))(init_keys)
        state = JaxEnvState(physics=physics, t=jnp.zeros(self.num_envs, jnp.int32), key=carry_keys)
        return state, obs

    def step(
        self, state: JaxEnvState, action: Float[Array, "seed action"]
    ) -> tuple[JaxEnvState, TimeStep]:
        physics, t, key, obs, final_obs, reward, terminated, truncated = jax.vmap(self._step_one)(
            state.physics, state.t, state.key, jnp.clip(action, -1.0, 1.0)
        )
        timestep = TimeStep(
            obs=obs, final_obs=final_obs, reward=reward, terminated=terminated, truncated=truncated
        )
        return JaxEnvState(physics=physics, t=t, key=key), timestep

    def _step_one(self, physics, t, key, action):
        step_key, reset_key, next_key = jr.split(key, 3)
        physics, final_obs, reward, terminated = self.task.step(physics, action, key=step_key)
        t = t + 1
        # A time limit only truncates episodes that did not reach a terminal state.
        truncated = (t >= self.task.episode_length) & ~terminated
        done = terminated | truncated
        reset_physics, reset_obs = self.task.init(key=reset_key)
        physics = jax.tree.map(lambda new, old: jnp.where(done, new, old), reset_physics, physics)
        obs = jnp.where(done, reset_obs, final_obs)
        t = jnp.where(done, 0, t)
        return physics, t, next_key, obs, final_obs, reward, terminated, truncated

    def save_host_state(self) -> bytes | None:
        return None

    def load_host_state(self, blob: bytes | None) -> None:
        if blob is not None:
            raise ValueError(
                f"{self.spec.name} keeps no host state, but a host-state blob was given"
            )


def _check_num_keys(key: Key[Array, " seed"], num_envs: int) -> None:
    if key.shape != (num_envs,):
        raise ValueError(
            f"reset needs one key per slot: expected key shape ({num_envs},), got {key.shape}; "
            f"use jax.random.split(key, {num_envs})"
        )


def _split_each(key: Key[Array, " seed"], num: int) -> tuple[Key[Array, " seed"], ...]:
    """Split every slot's key into `num` keys; returns `num` arrays of shape `(seed,)`."""
    split = jax.vmap(lambda k: jr.split(k, num))(key)
    return tuple(split[:, i] for i in range(num))


def _angle_normalize(x: Float[Array, ""]) -> Float[Array, ""]:
    return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


class Pendulum(AbstractJaxTask):
    """Pendulum swing-up with the dynamics and reward of gym's `Pendulum-v1`.

    The state is `(theta, theta_dot)` with `theta = 0` upright. The action in [-1, 1] is scaled
    to a torque in [-max_torque, max_torque]. Observation: `(cos theta, sin theta, theta_dot)`.
    Reward: `-(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 torque^2)`, computed on the
    state before the transition, as gym does. Episodes start at `theta ~ U(-pi, pi)`,
    `theta_dot ~ U(-1, 1)` and are truncated after 200 steps; they never terminate.

    A uniform-random policy scores about -1200 per episode, a good controller about -150.
    """

    obs_dim: ClassVar[int] = 3
    action_dim: ClassVar[int] = 1
    episode_length: ClassVar[int] = 200
    can_terminate: ClassVar[bool] = False
    max_speed: float = 8.0
    max_torque: float = 2.0
    dt: float = 0.05
    gravity: float = 10.0
    mass: float = 1.0
    length: float = 1.0

    def init(self, *, key: Key[Array, ""]) -> tuple[Float[Array, "2"], Float[Array, " obs"]]:
        physics = jr.uniform(
            key, (2,), minval=jnp.array([-jnp.pi, -1.0]), maxval=jnp.array([jnp.pi, 1.0])
        )
        return physics, self._observe(physics)

    def step(
        self, physics: Float[Array, "2"], action: Float[Array, " action"], *, key: Key[Array, ""]
    ) -> tuple[Float[Array, "2"], Float[Array, " obs"], Float[Array, ""], Bool[Array, ""]]:
        del key
        theta, theta_dot = physics[0], physics[1]
        torque = self.max_torque * action[0]
        cost = _angle_normalize(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * torque**2
        g, mass, length = self.gravity, self.mass, self.length
        theta_ddot = 3 * g / (2 * length) * jnp.sin(theta) + 3.0 / (mass * length**2) * torque
        theta_dot = jnp.clip(theta_dot + theta_ddot * self.dt, -self.max_speed, self.max_speed)
        # Semi-implicit Euler, as in gym: the new velocity moves the angle.
        physics = jnp.stack([theta + theta_dot * self.dt, theta_dot])
        return physics, self._observe(physics), (-cost).astype(jnp.float32), jnp.array(False)

    def _observe(self, physics: Float[Array, "2"]) -> Float[Array, "3"]:
        theta, theta_dot = physics[0], physics[1]
        return jnp.stack([jnp.cos(theta), jnp.sin(theta), theta_dot]).astype(jnp.float32)


class TargetProbe(AbstractJaxTask):
    """Probe: hit the target shown in the observation.

    Each step shows a fresh target `u ~ U(-1, 1)^2` as the observation; the reward for action
    `a` is `1 - mean((a - u)^2)`, so the optimal action is `a = obs`. The optimal return is
    `optimal_return = 10` (one per step, 10 steps); a uniform-random policy gets about 3.3.
    Tests that the agent conditions its action on the observation.
    """

    obs_dim: ClassVar[int] = 2
    action_dim: ClassVar[int] = 2
    episode_length: ClassVar[int] = 10
    can_terminate: ClassVar[bool] = False
    optimal_return: ClassVar[float] = 10.0

    def init(self, *, key: Key[Array, ""]) -> tuple[Float[Array, "2"], Float[Array, " obs"]]:
        target = jr.uniform(key, (2,), minval=-1.0, maxval=1.0)
        return target, target

    def step(
        self, physics: Float[Array, "2"], action: Float[Array, " action"], *, key: Key[Array, ""]
    ) -> tuple[Float[Array, "2"], Float[Array, " obs"], Float[Array, ""], Bool[Array, ""]]:
        reward = 1.0 - jnp.mean((action - physics) ** 2)
        target = jr.uniform(key, (2,), minval=-1.0, maxval=1.0)
        return target, target, reward.astype(jnp.float32), jnp.array(False)


class ConstantProbe(AbstractJaxTask):
    """Probe: reward 1 at every step whatever the action; the observation is always `[1]`.

    Every policy, hence the optimal one, returns `optimal_return = 10` per 10-step episode. The
    episode only ends by truncation, so a learner that bootstraps through time limits (the
    TD-MPC2 convention) should learn `V = Q = 1 / (1 - discount)` everywhere. Tests value
    learning in isolation.
    """

    obs_dim: ClassVar[int] = 1
    action_dim: ClassVar[int] = 1
    episode_length: ClassVar[int] = 10
    can_terminate: ClassVar[bool] = False
    optimal_return: ClassVar[float] = 10.0

    def init(self, *, key: Key[Array, ""]) -> tuple[Int[Array, ""], Float[Array, " obs"]]:
        del key
        return jnp.array(0, jnp.int32), jnp.ones(1, jnp.float32)

    def step(
        self, physics: Int[Array, ""], action: Float[Array, " action"], *, key: Key[Array, ""]
    ) -> tuple[Int[Array, ""], Float[Array, " obs"], Float[Array, ""], Bool[Array, ""]]:
        del action, key
        return physics + 1, jnp.ones(1, jnp.float32), jnp.array(1.0, jnp.float32), jnp.array(False)


def _fraction_left(t: Int[Array, ""], episode_length: int) -> Float[Array, "1"]:
    """The observation of the countdown-style probes: the fraction of the episode still to go."""
    return jnp.reshape((episode_length - t) / episode_length, (1,)).astype(jnp.float32)


def _start_countdown(episode_length: int) -> tuple[Int[Array, ""], Float[Array, "1"]]:
    t = jnp.array(0, jnp.int32)
    return t, _fraction_left(t, episode_length)


class CountdownProbe(AbstractJaxTask):
    """Probe: reward 1 per step whatever the action, and a true terminal state after 5 steps.

    The observation is the fraction of the episode still to go, `(5 - t) / 5`. Every episode
    returns `optimal_return = 5` and ends with `terminated=True` (never `truncated`). With
    bootstrapping masked at terminal states (the "episodic" switch) the value of the
    observation at step `t` is `(1 - discount^(5 - t)) / (1 - discount)`; without masking the
    learner's fixed point is `1 / (1 - discount)`. Tests the termination path.
    """

    obs_dim: ClassVar[int] = 1
    action_dim: ClassVar[int] = 1
    episode_length: ClassVar[int] = 5
    can_terminate: ClassVar[bool] = True
    optimal_return: ClassVar[float] = 5.0

    def init(self, *, key: Key[Array, ""]) -> tuple[Int[Array, ""], Float[Array, " obs"]]:
        del key
        return _start_countdown(self.episode_length)

    def step(
        self, physics: Int[Array, ""], action: Float[Array, " action"], *, key: Key[Array, ""]
    ) -> tuple[Int[Array, ""], Float[Array, " obs"], Float[Array, ""], Bool[Array, ""]]:
        del action, key
        t = physics + 1
        return (
            t,
            _fraction_left(t, self.episode_length),
            jnp.array(1.0, jnp.float32),
            t >= self.episode_length,
        )


class TrapProbe(AbstractJaxTask):
    """Probe: an early-termination trap. Each step pays 0.5, unless the action is below -0.5:
    then it pays 1.0 once and the episode *terminates*.

    The observation is the fraction of the episode still to go. Taking the trap early is a
    bad trade (1.0 now instead of 0.5 per remaining step) that a planner only sees if its model
    knows the episode ends there: without a termination model the imagined rollout goes on
    after the trap and looks 0.5 better than the safe one. Best return 5.5 (safe for 9 steps,
    trap on the last); trapping at step k returns 0.5 k + 1; random play about 2.
    """

    obs_dim: ClassVar[int] = 1
    action_dim: ClassVar[int] = 1
    episode_length: ClassVar[int] = 10
    can_terminate: ClassVar[bool] = True
    optimal_return: ClassVar[float] = 5.5

    def init(self, *, key: Key[Array, ""]) -> tuple[Int[Array, ""], Float[Array, " obs"]]:
        del key
        return _start_countdown(self.episode_length)

    def step(
        self, physics: Int[Array, ""], action: Float[Array, " action"], *, key: Key[Array, ""]
    ) -> tuple[Int[Array, ""], Float[Array, " obs"], Float[Array, ""], Bool[Array, ""]]:
        del key
        trapped = action[0] < -0.5
        t = physics + 1
        reward = jnp.where(trapped, 1.0, 0.5).astype(jnp.float32)
        return t, _fraction_left(t, self.episode_length), reward, trapped


JAX_TASKS: dict[str, type[AbstractJaxTask]] = {
    "jax/pendulum": Pendulum,
    "jax/probe-target": TargetProbe,
    "jax/probe-constant": ConstantProbe,
    "jax/probe-countdown": CountdownProbe,
    "jax/probe-trap": TrapProbe,
}
"""Every JAX-native task by name."""

PROBE_OPTIMAL_RETURNS: dict[str, float] = {
    "jax/probe-target": TargetProbe.optimal_return,
    "jax/probe-constant": ConstantProbe.optimal_return,
    "jax/probe-countdown": CountdownProbe.optimal_return,
    "jax/probe-trap": TrapProbe.optimal_return,
}
"""Optimal (undiscounted) episode return of each probe task, for training tests."""


def make_jax_env(name: str, num_envs: int) -> JaxEnv:
    """Build the JAX-native task `name` (a key of `JAX_TASKS`) with `num_envs` slots."""
    return JaxEnv(JAX_TASKS[name](), num_envs, name=name)


def jax_task_spec(name: str) -> EnvSpec:
    """The `EnvSpec` of a JAX-native task (no compilation involved)."""
    task = JAX_TASKS[name]
    return EnvSpec(
        name=name,
        obs_dim=task.obs_dim,
        action_dim=task.action_dim,
        episode_length=task.episode_length,
        action_repeat=1,
        can_terminate=task.can_terminate,
    )
