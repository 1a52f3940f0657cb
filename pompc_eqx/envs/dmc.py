"""dm_control suite tasks with TD-MPC2's conventions, stepped on the host.

Conventions (TD-MPC2 `envs/dmcontrol.py`): actions in [-1, 1] rescaled to the action spec
(except lqr's effectively unbounded +-1e10, where the action is applied as given),
**action repeat 2** (rewards summed, no early break), **500 agent steps** per episode
(truncated, never terminated), observations the float32 concatenation of the observation
dict values in spec order. Episodes are counted here, so dm_control's own time limit and
termination signals never cut an episode short.

Names: `dmc/<domain>-<task>` with dm_control's names (`dmc/ball_in_cup-catch`,
`dmc/cartpole-swingup_sparse`) is canonical; TD-MPC2's spellings (`dmc/cup-catch`,
`dmc/cartpole-swingup-sparse`, `dmc/pointmass-easy`) are accepted too.
"""

import functools

import mujoco
import numpy as np
from dm_control import suite
from jaxtyping import Float, UInt8

from .base import EnvSpec
from .host import AbstractHostSlot, HostBatch, HostEnv


ACTION_REPEAT = 2
EPISODE_LENGTH = 500

_DOMAIN_ALIASES = {"cup": "ball_in_cup", "pointmass": "point_mass"}
# lqr draws its joints' stiffness and damping from the task seed when building the model, so
# reseeding an lqr slot means rebuilding it; every other suite model is seed-independent.
_SEED_DEPENDENT_DOMAINS = frozenset({"lqr"})
# Model arrays that suite tasks overwrite per episode (targets, terrain); saved with the state.
_EPISODE_MODEL_FIELDS = (
    "body_pos",
    "body_quat",
    "geom_pos",
    "geom_quat",
    "geom_size",
    "site_pos",
    "site_quat",
    "site_size",
    "hfield_data",
)
_UNBOUNDED = 1e6
_INTEGRATION_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
_LOOKUP = {(d.lower(), t.lower()): (d, t) for d, t in suite.ALL_TASKS}

DMC_TASKS: tuple[str, ...] = tuple(f"dmc/{d}-{t}" for d, t in suite.ALL_TASKS)
"""Canonical names of every dm_control suite task."""

DMC_ALIASES: tuple[str, ...] = tuple(
    sorted(
        {f"dmc/{d.replace('_', '-')}-{t.replace('_', '-')}" for d, t in suite.ALL_TASKS}
        | {"dmc/cup-catch", "dmc/pointmass-easy", "dmc/pointmass-hard"}
    )
)
"""Hyphenated spellings, as TD-MPC2 writes them (used for "did you mean" hints)."""


def parse_dmc_task(name: str) -> tuple[str, str] | None:
    """Map a `dmc/...` task name to dm_control's `(domain, task)`, or `None` if unknown.

    **Arguments:**
    - `name`: `dmc/<domain>-<task>`; either part may use `-` or `_` between words, and the
        TD-MPC2 aliases `cup` and `pointmass` are accepted.

    **Returns:** the pair as in `dm_control.suite.ALL_TASKS`, or `None`.
    """
    if not name.startswith("dmc/"):
        return None
    parts = name.removeprefix("dmc/").lower().split("-")
    for i in range(1, len(parts)):
        domain = "_".join(parts[:i])
        domain = _DOMAIN_ALIASES.get(domain, domain)
        found = _LOOKUP.get((domain, "_".join(parts[i:])))
        if found is not None:
            return found
    return None


def canonical_dmc_name(domain: str, task: str) -> str:
    """The canonical task name `dmc/<domain>-<task>`."""
    return f"dmc/{domain}-{task}"


class DmcSlot(AbstractHostSlot):
    """One dm_control suite environment, stepped without `Environment.step`'s bookkeeping.

    An agent step runs `before_step`, `physics.step`, `after_step` and `get_reward` exactly
    as `Environment.step` does, `action_repeat` times, and computes the observation once at
    the end. At construction the task is seeded with `seed`, as `suite.load(...,
    task_kwargs={"random": seed})` does.

    **Arguments:**
    - `domain`, `task`: dm_control's names.
    - `seed`: the initial task seed (every `reset(seed)` reseeds it).
    - `action_repeat`: physics control steps per agent step.
    """

    def __init__(
        self, domain: str, task: str, *, seed: int = 0, action_repeat: int = ACTION_REPEAT
    ):
        self.domain = domain
        self.task_name = task
        self.action_repeat = action_repeat
        self._build(seed)

    def _build(self, seed: int) -> None:
        env = suite.load(self.domain, self.task_name, task_kwargs={"random": seed})
        self._seed = seed
        self._env = env
        self._physics = env.physics
        self._task = env.task
        self._n_sub_steps = round(env.control_timestep() / env.physics.timestep())
        action_spec = env.action_spec()
        low = np.broadcast_to(action_spec.minimum, action_spec.shape).astype(np.float64)
        high = np.broadcast_to(action_spec.maximum, action_spec.shape).astype(np.float64)
        # lqr declares +-1e10, i.e. unbounded: its actions are applied as given, not scaled.
        unbounded = (np.abs(low) > _UNBOUNDED) | (np.abs(high) > _UNBOUNDED)
        low, high = np.where(unbounded, -1.0, low), np.where(unbounded, 1.0, high)
        self._rescale = not (np.all(low == -1.0) and np.all(high == 1.0))
        self._action_low, self._action_span = low, high - low
        self.action_dim = int(np.prod(action_spec.shape))
        sizes = [int(np.prod(spec.shape)) for spec in env.observation_spec().values()]
        stops = np.cumsum(sizes).tolist()
        self._obs_slices = [slice(stop - size, stop) for size, stop in zip(sizes, stops)]
        self.obs_dim = int(sum(sizes))

    def reset(self, seed: int | None) -> None:
        if seed is not None:
            if self.domain in _SEED_DEPENDENT_DOMAINS:
                self._build(seed)
            else:
                # Same stream as RandomState(seed): building the model consumed no draws.
                self._task.random.seed(seed)
        try:
            with self._physics.reset_context():
                self._task.initialize_episode(self._physics)
        except mujoco.FatalError as error:
            raise RuntimeError(
                f"dmc/{self.domain}-{self.task_name} needs an OpenGL context at every reset "
                "(dm_control uploads its terrain to the renderer): set MUJOCO_GL=egl on a "
                f"machine without a display ({error})"
            ) from error

    def step(self, action: Float[np.ndarray, " action"]) -> tuple[float, bool, bool]:
        action = np.asarray(action, np.float64)
        if self._rescale:
            action = self._action_low + (action + 1.0) * 0.5 * self._action_span
        task, physics = self._task, self._physics
        reward = 0.0
        for _ in range(self.action_repeat):
            task.before_step(action, physics)
            physics.step(self._n_sub_steps)
            task.after_step(physics)
            reward += task.get_reward(physics)
        return reward, False, False

    def observe(self, out: Float[np.ndarray, " obs"]) -> None:
        observation = self._task.get_observation(self._physics)
        for value, where in zip(observation.values(), self._obs_slices):
            out[where] = np.ravel(value)

    def get_state(self) -> dict[str, np.ndarray]:
        """The MuJoCo integration state (positions, velocities, controls, warm start, time),
        the per-episode model arrays, the task's `RandomState` and the build seed."""
        kind, keys, position, has_gauss, cached_gaussian = self._task.random.get_state()
        model = self._physics.model
        state = {
            "integration": self._physics.get_state(sig=_INTEGRATION_STATE),
            "random_keys": keys,
            "random_pos": np.array(position),
            "random_has_gauss": np.array(has_gauss),
            "random_cached_gaussian": np.array(cached_gaussian),
            "seed": np.array(self._seed),
        }
        for field in _EPISODE_MODEL_FIELDS:
            state[f"model_{field}"] = np.array(getattr(model, field))
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        seed = int(state["seed"])
        if self.domain in _SEED_DEPENDENT_DOMAINS and seed != self._seed:
            self._build(seed)
        model = self._physics.model
        for field in _EPISODE_MODEL_FIELDS:
            getattr(model, field)[...] = state[f"model_{field}"]
        self._task.random.set_state(
            (
                "MT19937",
                state["random_keys"],
                int(state["random_pos"]),
                int(state["random_has_gauss"]),
                float(state["random_cached_gaussian"]),
            )
        )
        self._physics.set_state(state["integration"], sig=_INTEGRATION_STATE)
        # Stepping reads derived quantities (positions, contacts) left by the previous step.
        self._physics.forward()

    def render(self, height: int, width: int) -> UInt8[np.ndarray, "height width 3"]:
        camera_id = 0 if self._physics.model.ncam > 0 else -1
        return self._physics.render(height, width, camera_id=camera_id)


@functools.cache
def _dmc_dims(domain: str, task: str) -> tuple[int, int]:
    env = suite.load(domain, task)
    obs_dim = sum(int(np.prod(spec.shape)) for spec in env.observation_spec().values())
    return obs_dim, int(np.prod(env.action_spec().shape))


def dmc_spec(name: str, domain: str, task: str) -> EnvSpec:
    """The `EnvSpec` of a suite task (loads it once per process; cached).

    **Arguments:**
    - `name`: the name to store in the spec.
    - `domain`, `task`: dm_control's names.
    """
    obs_dim, action_dim = _dmc_dims(domain, task)
    return EnvSpec(
        name=name,
        obs_dim=obs_dim,
        action_dim=action_dim,
        episode_length=EPISODE_LENGTH,
        action_repeat=ACTION_REPEAT,
        can_terminate=False,
    )


def make_dmc_env(name: str, domain: str, task: str, num_envs: int) -> HostEnv:
    """A `HostEnv` with `num_envs` independent instances of a suite task.

    **Arguments:**
    - `name`: the name to store in the spec.
    - `domain`, `task`: dm_control's names.
    - `num_envs`: number of slots.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    slots = [DmcSlot(domain, task) for _ in range(num_envs)]
    spec = EnvSpec(
        name=name,
        obs_dim=slots[0].obs_dim,
        action_dim=slots[0].action_dim,
        episode_length=EPISODE_LENGTH,
        action_repeat=ACTION_REPEAT,
        can_terminate=False,
    )
    return HostEnv(HostBatch(spec, slots, identity=canonical_dmc_name(domain, task)))
