"""The environment interface seen by the training loop.

Every environment is **batched over seeds**: one instance of `AbstractEnv` drives `num_envs`
independent episodes, one per seed, and its `reset`/`step` take and return arrays with a
leading `seed` axis. This is the one place where the loop is not written per seed: a JAX-native
task vmaps its single-episode dynamics, while a host simulator (dm_control, HumanoidBench) is
stepped through a single `io_callback` per agent step that receives the whole seed batch.

Episodes auto-reset: when a step ends an episode (`terminated | truncated`), `TimeStep.obs`
is the first observation of the next episode and `TimeStep.final_obs` is the observation the
step actually reached (what the replay buffer stores as the episode's last row).
"""

import abc
import dataclasses

import equinox as eqx
from jaxtyping import Array, Bool, Float, Key, PyTree


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Static facts about a task.

    **Fields:**
    - `name`: the task name as given to `--task` (e.g. `dmc/cartpole-swingup`).
    - `obs_dim`, `action_dim`: flat observation and action sizes. Actions live in [-1, 1].
    - `episode_length`: time limit in **agent steps**.
    - `action_repeat`: simulator steps per agent step (env steps = agent steps x this).
    - `can_terminate`: whether episodes may end early (a terminal state, not a time limit).
    """

    name: str
    obs_dim: int
    action_dim: int
    episode_length: int
    action_repeat: int = 1
    can_terminate: bool = False


class TimeStep(eqx.Module):
    """What one batched `step` returns (all arrays have a leading `seed` axis)."""

    obs: Float[Array, "seed obs"]
    final_obs: Float[Array, "seed obs"]
    reward: Float[Array, " seed"]
    terminated: Bool[Array, " seed"]
    truncated: Bool[Array, " seed"]

    @property
    def done(self) -> Bool[Array, " seed"]:
        return self.terminated | self.truncated


class AbstractEnv(eqx.Module):
    """A batch of `num_envs` independent episodes of one task, one per seed.

    `reset` and `step` are pure from the point of view of JAX and may be called inside
    `jax.jit`/`lax.scan` (host simulators use an `io_callback` internally). They must not be
    `vmap`ped: the seed axis is already explicit.
    """

    spec: eqx.AbstractVar[EnvSpec]
    num_envs: eqx.AbstractVar[int]

    @abc.abstractmethod
    def reset(self, key: Key[Array, " seed"]) -> tuple[PyTree, Float[Array, "seed obs"]]:
        """Start a new episode in every slot; slot `i` is seeded from `key[i]`.

        **Returns:** `(env_state, obs)`.
        """

    @abc.abstractmethod
    def step(self, state: PyTree, action: Float[Array, "seed action"]) -> tuple[PyTree, TimeStep]:
        """Advance every slot by one agent step (auto-resetting finished episodes)."""

    @abc.abstractmethod
    def save_host_state(self) -> bytes | None:
        """Host-side simulator state for checkpoints; `None` if everything is in `env_state`."""

    @abc.abstractmethod
    def load_host_state(self, blob: bytes | None) -> None:
        """Restore what `save_host_state` returned (a no-op for JAX-native tasks)."""
