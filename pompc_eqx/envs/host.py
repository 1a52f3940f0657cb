"""Host simulators (dm_control, HumanoidBench) stepped from inside compiled code.

A `HostEnv` owns one simulator instance per seed (a *slot*) on the host. Each agent step is
ONE `jax.experimental.io_callback` that receives the whole `(seed, action)` batch and returns
every slot's observation, reward and episode flags, so a `lax.scan` over agent steps (the
training loop) stays compiled. The only device-side state is a per-slot step counter; it is
passed into every callback, which both orders the calls by data dependence and lets the host
check that it is being stepped from its latest state. The callbacks are also `ordered=True`,
so a `reset` that follows `step`s in the same program runs after them.

To keep the per-step cost low, the batch is packed into one float32 array each way (a
callback costs about 20 microseconds per argument on CPU) and the host writes into
preallocated buffers.
"""

import abc
import io
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.experimental import io_callback
from jaxtyping import Array, ArrayLike, Float, Int, Key, UInt8

from .base import AbstractEnv, EnvSpec, TimeStep


_MAX_SEED = 2**31 - 1
_STATE_FORMAT = 1


class StaleEnvStateError(RuntimeError):
    """A host env was stepped from an `env_state` that is not its latest one."""


class AbstractHostSlot(abc.ABC):
    """One simulator instance living on the host: the episodes of one seed (slot).

    Implementations hold the simulator and do no bookkeeping: step counting, time limits and
    auto-resets are done by `HostBatch`.
    """

    @abc.abstractmethod
    def reset(self, seed: int | None) -> None:
        """Start a new episode.

        **Arguments:**
        - `seed`: reseed the simulator's random state with this seed first (used by
            `AbstractEnv.reset`), or `None` to continue its random stream (auto-resets).
        """

    @abc.abstractmethod
    def step(self, action: Float[np.ndarray, " action"]) -> tuple[float, bool, bool]:
        """Apply one agent step (including any action repeat) with an action in [-1, 1].

        **Returns:** `(reward, terminated, truncated)`, where `truncated` is the simulator's
        own truncation flag (the agent-step time limit is applied by `HostBatch`).
        """

    @abc.abstractmethod
    def observe(self, out: Float[np.ndarray, " obs"]) -> None:
        """Write the current flat observation into `out` (a float32 row)."""

    @abc.abstractmethod
    def get_state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume the current episode, as plain numpy arrays."""

    @abc.abstractmethod
    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `get_state` returned."""

    @abc.abstractmethod
    def render(self, height: int, width: int) -> UInt8[np.ndarray, "height width 3"]:
        """An RGB frame of the current state."""


class HostBatch:
    """The host side of a `HostEnv`: the slots, their step counters and the I/O buffers.

    `reset_packed` and `step_packed` are the `io_callback` targets. Observations,
    `final_obs`, rewards, flags and counters travel packed in one float32 array per call
    (counters are small integers, exact in float32).

    **Arguments:**
    - `spec`: the task's `EnvSpec` (`episode_length` is the time limit in agent steps).
    - `slots`: one simulator per seed.
    - `identity`: a canonical task identity stored with the host state, checked on load.
    """

    def __init__(self, spec: EnvSpec, slots: list[AbstractHostSlot], *, identity: str):
        if not slots:
            raise ValueError("a host environment needs at least one slot")
        self.spec = spec
        self.slots = slots
        self.identity = identity
        self.num_envs = len(slots)
        self.t = np.zeros(self.num_envs, np.int32)
        obs_dim = spec.obs_dim
        self._reset_out = np.zeros((self.num_envs, obs_dim + 1), np.float32)
        self._out = np.zeros((self.num_envs, 2 * obs_dim + 4), np.float32)
        self._obs = self._out[:, :obs_dim]
        self._final_obs = self._out[:, obs_dim : 2 * obs_dim]
        self._reward = self._out[:, 2 * obs_dim]
        self._terminated = self._out[:, 2 * obs_dim + 1]
        self._truncated = self._out[:, 2 * obs_dim + 2]
        self._t_out = self._out[:, 2 * obs_dim + 3]

    def reset_packed(self, seeds: Int[ArrayLike, " seed"]) -> Float[np.ndarray, "seed packed"]:
        """Reseed and reset every slot; returns `[obs | t]` per slot."""
        seeds = np.asarray(seeds)
        obs_dim = self.spec.obs_dim
        for i, slot in enumerate(self.slots):
            slot.reset(int(seeds[i]))
            slot.observe(self._reset_out[i, :obs_dim])
        self.t[:] = 0
        self._reset_out[:, obs_dim] = 0.0
        # XLA copies callback results into its own buffers, so reusing them is safe.
        return self._reset_out

    def step_packed(
        self, packed: Float[ArrayLike, "seed packed"]
    ) -> Float[np.ndarray, "seed packed_out"]:
        """Step every slot; `packed` is `[action | t]` per slot, the result is
        `[obs | final_obs | reward | terminated | truncated | t]` per slot."""
        packed = np.asarray(packed)
        token = packed[:, -1]
        if (token != self.t).any():
            raise StaleEnvStateError(
                f"{self.spec.name}: step was given an env_state whose step counters "
                f"{token.astype(np.int32)} do not match the simulators' {self.t}; host "
                "simulators cannot go back in time, so pass the state returned by the previous "
                "reset/step (or restore env_state and load_host_state from the same checkpoint)"
            )
        actions = packed[:, :-1]
        episode_length = self.spec.episode_length
        obs, final_obs, counters = self._obs, self._final_obs, self.t
        for i, slot in enumerate(self.slots):
            reward, terminated, truncated = slot.step(actions[i])
            t = counters[i] + 1
            truncated = (truncated or t >= episode_length) and not terminated
            slot.observe(final_obs[i])
            if terminated or truncated:
                slot.reset(None)
                slot.observe(obs[i])
                t = 0
            else:
                obs[i] = final_obs[i]
            self._reward[i] = reward
            self._terminated[i] = terminated
            self._truncated[i] = truncated
            counters[i] = t
        self._t_out[:] = self.t
        return self._out

    def save(self) -> bytes:
        """Every slot's simulator state and step counter, as an `.npz` archive in bytes."""
        arrays = {"t": self.t.copy(), "meta": np.array(json.dumps(self._meta()))}
        for i, slot in enumerate(self.slots):
            for name, value in slot.get_state().items():
                arrays[f"slot{i}.{name}"] = np.asarray(value)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    def load(self, blob: bytes) -> None:
        """Restore what `save` returned (from an environment of the same task and size)."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            if meta != self._meta():
                raise ValueError(
                    f"host state was saved from {meta} but this environment is {self._meta()}; "
                    "make the environment with the same task and num_envs"
                )
            states = [{} for _ in self.slots]
            for key in archive.files:
                slot_name, _, name = key.partition(".")
                if slot_name.startswith("slot"):
                    states[int(slot_name.removeprefix("slot"))][name] = archive[key]
            for slot, state in zip(self.slots, states):
                slot.set_state(state)
            self.t[:] = archive["t"]

    def _meta(self) -> dict:
        return {"format": _STATE_FORMAT, "task": self.identity, "num_envs": self.num_envs}


def slot_seeds(key: Key[Array, " seed"]) -> Int[Array, " seed"]:
    """The integer seed that each slot's simulator receives from its key at `reset`.

    **Arguments:**
    - `key`: one key per slot, as passed to `reset`.

    **Returns:** non-negative int32 seeds (each slot's key is used once, for this draw).
    """
    return jax.vmap(lambda k: jr.randint(k, (), 0, _MAX_SEED, dtype=jnp.int32))(key)


class HostEnvState(eqx.Module):
    """Device-side state of a `HostEnv`: the agent step within each slot's episode. It is the
    data token that orders the host calls."""

    t: Int[Array, " seed"]


def pack_step(
    state: HostEnvState, action: Float[Array, "seed action"]
) -> Float[Array, "seed packed"]:
    """`[action | t]` per slot, what `HostBatch.step_packed` takes (actions clipped to [-1, 1])."""
    action = jnp.clip(action, -1.0, 1.0).astype(jnp.float32)
    return jnp.concatenate([action, state.t.astype(jnp.float32)[:, None]], axis=1)


def unpack_step(
    out: Float[Array, "seed packed_out"], obs_dim: int
) -> tuple[HostEnvState, TimeStep]:
    """The env state and `TimeStep` from what `HostBatch.step_packed` returned."""
    timestep = TimeStep(
        obs=out[:, :obs_dim],
        final_obs=out[:, obs_dim : 2 * obs_dim],
        reward=out[:, 2 * obs_dim],
        terminated=out[:, 2 * obs_dim + 1] > 0.5,
        truncated=out[:, 2 * obs_dim + 2] > 0.5,
    )
    return HostEnvState(t=out[:, 2 * obs_dim + 3].astype(jnp.int32)), timestep


class HostEnv(AbstractEnv):
    """A batch of host simulators behind the `AbstractEnv` interface.

    The `HostBatch` is a static field (hashed by identity), so the env can be closed over or
    passed through `eqx.filter_jit`; separate `HostEnv`s never share simulators.

    **Arguments:**
    - `host`: the host-side slots and buffers.
    """

    host: HostBatch = eqx.field(static=True)
    spec: EnvSpec = eqx.field(static=True)
    num_envs: int = eqx.field(static=True)

    def __init__(self, host: HostBatch):
        self.host = host
        self.spec = host.spec
        self.num_envs = host.num_envs

    def reset(self, key: Key[Array, " seed"]) -> tuple[HostEnvState, Float[Array, "seed obs"]]:
        if key.shape != (self.num_envs,):
            raise ValueError(
                f"reset needs one key per slot: expected key shape ({self.num_envs},), got "
                f"{key.shape}; use jax.random.split(key, {self.num_envs})"
            )
        seeds = slot_seeds(key)
        obs_dim = self.spec.obs_dim
        shape = jax.ShapeDtypeStruct((self.num_envs, obs_dim + 1), jnp.float32)
        packed = io_callback(self.host.reset_packed, shape, seeds, ordered=True)
        state = HostEnvState(t=packed[:, obs_dim].astype(jnp.int32))
        return state, packed[:, :obs_dim]

    def step(
        self, state: HostEnvState, action: Float[Array, "seed action"]
    ) -> tuple[HostEnvState, TimeStep]:
        obs_dim = self.spec.obs_dim
        shape = jax.ShapeDtypeStruct((self.num_envs, 2 * obs_dim + 4), jnp.float32)
        out = io_callback(self.host.step_packed, shape, pack_step(state, action), ordered=True)
        return unpack_step(out, obs_dim)

    def save_host_state(self) -> bytes | None:
        return self.host.save()

    def load_host_state(self, blob: bytes | None) -> None:
        if blob is None:
            raise ValueError(f"{self.spec.name} needs the host state saved with its checkpoint")
        self.host.load(blob)

    def render(
        self, slot: int, height: int = 240, width: int = 320
    ) -> UInt8[np.ndarray, "height width 3"]:
        """An RGB frame of slot `slot`'s current state (for videos; call between steps).

        Rendering needs an OpenGL backend chosen before MuJoCo is imported: on a machine
        without a display, set `MUJOCO_GL=egl` in the environment.
        """
        return self.host.slots[slot].render(height, width)
