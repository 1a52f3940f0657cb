"""HumanoidBench tasks (optional dependency), stepped on the host.

HumanoidBench is not on PyPI and its own pins (mujoco 3.1.6, dm_control 1.0.20, torch) would
break this project's stack, so it is installed from a clone with `pip install --no-deps -e`.
On our mujoco/dm-control it loads after two shims, applied by `import_humanoid_bench` before
the import:
- `humanoid_bench.dmc_deps.dmc_sizes` (a copy of dm_control's size table frozen at mujoco
  3.1.6) is replaced by the installed dm_control's table;
- if torch is not installed, a stand-in `torch` module is provided during the import only
  (humanoid_bench imports torch at module level for its hierarchical-policy wrappers, which
  we do not use).
Environments are created with `render_mode=None` (no OpenGL context); `render` draws with
`mujoco.Renderer` on demand.

Conventions: no extra action repeat (HumanoidBench already runs 10 physics steps per agent
step), the registered time limit in agent steps (1000 for the locomotion tasks), and the
simulator's `terminated` flag reported faithfully: an episode ends on termination or at the
time limit. Whether a termination masks bootstrapping is the training code's choice.
"""

import atexit
import contextlib
import difflib
import importlib
import importlib.util
import json
import sys
import types

import mujoco
import numpy as np
from jaxtyping import Float, UInt8

from .base import EnvSpec
from .errors import MissingDependencyError, UnknownTaskError
from .host import AbstractHostSlot, HostBatch, HostEnv


INSTALL_HINT = (
    "clone https://github.com/carlosferrazza/humanoid-bench, then run "
    '`pip install --no-deps -e <clone>` and `pip install "pompc-eqx[humanoid]"` '
    "(HumanoidBench is not on PyPI, and its pinned dependencies would replace mujoco and "
    "dm-control)"
)

H1HAND_LOCOMOTION_TASKS: tuple[str, ...] = tuple(
    f"hb/h1hand-{task}-v0"
    for task in (
        "walk",
        "stand",
        "run",
        "reach",
        "hurdle",
        "crawl",
        "maze",
        "sit_simple",
        "sit_hard",
        "balance_simple",
        "balance_hard",
        "stair",
        "slide",
        "pole",
    )
)
"""The 14 h1hand locomotion tasks of the HumanoidBench paper."""

_INTEGRATION_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
# HumanoidBench's default camera (humanoid_bench/env.py), used when a task names none.
_TRACKING_CAMERA = {
    "trackbodyid": 1,
    "distance": 5.0,
    "lookat": (0.0, 0.0, 1.0),
    "elevation": -20.0,
}


def import_humanoid_bench() -> types.ModuleType:
    """Import `humanoid_bench` on this project's pinned stack (see the module docstring).

    **Returns:** the `humanoid_bench` module (whose import registers its gymnasium ids).

    **Raises:** `MissingDependencyError` with a one-line install hint if humanoid_bench, or
    something it imports, is missing.
    """
    try:
        importlib.import_module("gymnasium")
    except ModuleNotFoundError as error:
        raise MissingDependencyError(
            f"HumanoidBench tasks need gymnasium, which is not installed: {INSTALL_HINT}"
        ) from error
    if "humanoid_bench" not in sys.modules:
        _install_size_table_shim()
    try:
        with _stand_in_torch():
            return importlib.import_module("humanoid_bench")
    except ModuleNotFoundError as error:
        if error.name == "humanoid_bench":
            message = "HumanoidBench (the humanoid_bench package) is not installed"
        else:
            message = f"importing humanoid_bench failed because {error.name!r} is missing"
        raise MissingDependencyError(f"{message}: {INSTALL_HINT}") from error


def _install_size_table_shim() -> None:
    from dm_control.mujoco.wrapper.mjbindings import sizes

    sys.modules["humanoid_bench.dmc_deps.dmc_sizes"] = sizes


@contextlib.contextmanager
def _stand_in_torch():
    if importlib.util.find_spec("torch") is not None:
        yield
        return
    torch = types.ModuleType("torch")
    torch.nn = types.ModuleType("torch.nn")
    torch.nn.Module = object
    sys.modules["torch"], sys.modules["torch.nn"] = torch, torch.nn
    try:
        yield
    finally:
        # Only humanoid_bench's own module-level references keep the stand-in.
        del sys.modules["torch"], sys.modules["torch.nn"]


def humanoid_bench_available() -> bool:
    """Whether HumanoidBench can be imported (applies the shims and imports it if so)."""
    try:
        import_humanoid_bench()
    except MissingDependencyError:
        return False
    return True


def _registered_env_id(name: str) -> str:
    """The gymnasium id of `hb/<id>`, after checking that humanoid_bench registered it."""
    import_humanoid_bench()
    registry = importlib.import_module("gymnasium").registry
    env_id = name.removeprefix("hb/")
    if env_id not in registry:
        known = [f"hb/{i}" for i in registry if i.count("-") >= 2]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        raise UnknownTaskError(
            f"unknown HumanoidBench task {name!r}: names are hb/<robot>-<task>-v0 as registered "
            f"by humanoid_bench (e.g. hb/h1hand-walk-v0); closest matches: "
            f"{', '.join(close) or 'none'}"
        )
    return env_id


class HumanoidBenchSlot(AbstractHostSlot):
    """One HumanoidBench environment (the unwrapped gymnasium env; we count steps ourselves).

    Several HumanoidBench tasks draw from NumPy's *global* random state in `reset_model` (e.g.
    the reach goal, the sit_hard start pose; no task does in `step`). Each slot therefore keeps
    its own copy of that state, seeded with the slot seed and swapped in around resets, so
    slots are reproducible and independent of each other and of other code. (Swapping costs
    tens of microseconds, which is why steps are not wrapped.)

    **Arguments:**
    - `env_id`: the registered gymnasium id, e.g. `h1hand-walk-v0`.
    - `seed`: the initial seed (every `reset(seed)` reseeds).
    """

    def __init__(self, env_id: str, *, seed: int = 0):
        import_humanoid_bench()
        gym = importlib.import_module("gymnasium")
        registered = gym.make(env_id, render_mode=None, disable_env_checker=True)
        self.env_id = env_id
        self.max_episode_steps = registered.spec.max_episode_steps or 1000
        self._env = registered.unwrapped
        self.obs_dim = int(np.prod(self._env.observation_space.shape))
        self.action_dim = int(np.prod(self._env.action_space.shape))
        self._global_random = np.random.RandomState(seed).get_state()
        self._obs = np.zeros(self.obs_dim, np.float32)
        self._renderer: mujoco.Renderer | None = None

    @contextlib.contextmanager
    def _own_global_random(self):
        outer = np.random.get_state()
        np.random.set_state(self._global_random)
        try:
            yield
        finally:
            self._global_random = np.random.get_state()
            np.random.set_state(outer)

    def reset(self, seed: int | None) -> None:
        if seed is not None:
            self._global_random = np.random.RandomState(seed).get_state()
        with self._own_global_random():
            obs, _ = self._env.reset(seed=seed)
        self._obs = obs

    def step(self, action: Float[np.ndarray, " action"]) -> tuple[float, bool, bool]:
        obs, reward, terminated, truncated, _ = self._env.step(action)
        self._obs = obs
        return float(reward), bool(terminated), bool(truncated)

    def observe(self, out: Float[np.ndarray, " obs"]) -> None:
        out[:] = np.ravel(self._obs)

    def get_state(self) -> dict[str, np.ndarray]:
        """The MuJoCo integration state (qpos, qvel, time, controls, warm start), the env's
        `np_random` state, the slot's global-random state, the last observation, and the
        task object's plain numeric attributes (e.g. the reach goal). Other Python-side task
        state, if any, is not saved."""
        model, data = self._env.model, self._env.data
        integration = np.empty(mujoco.mj_stateSize(model, _INTEGRATION_STATE), np.float64)
        mujoco.mj_getState(model, data, integration, _INTEGRATION_STATE)
        kind, keys, position, has_gauss, cached_gaussian = self._global_random
        state = {
            "integration": integration,
            "np_random": np.array(json.dumps(self._env.np_random.bit_generator.state)),
            "global_keys": keys,
            "global_pos": np.array(position),
            "global_has_gauss": np.array(has_gauss),
            "global_cached_gaussian": np.array(cached_gaussian),
            "obs": np.array(self._obs),
        }
        for name, value in _numeric_attributes(self._env.task).items():
            state[f"task_{name}"] = np.array(value)
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        model, data = self._env.model, self._env.data
        mujoco.mj_setState(model, data, state["integration"], _INTEGRATION_STATE)
        mujoco.mj_forward(model, data)
        self._env.np_random.bit_generator.state = json.loads(str(state["np_random"]))
        self._global_random = (
            "MT19937",
            state["global_keys"],
            int(state["global_pos"]),
            int(state["global_has_gauss"]),
            float(state["global_cached_gaussian"]),
        )
        self._obs = np.array(state["obs"])
        task = self._env.task
        for name, current in _numeric_attributes(task).items():
            saved = state[f"task_{name}"]
            setattr(
                task, name, np.array(saved) if isinstance(current, np.ndarray) else saved.item()
            )

    def render(self, height: int, width: int) -> UInt8[np.ndarray, "height width 3"]:
        model = self._env.model
        if self._renderer is None or (self._renderer.height, self._renderer.width) != (
            height,
            width,
        ):
            if self._renderer is not None:
                self._renderer.close()
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, height)
            self._renderer = mujoco.Renderer(model, height, width)
            # Free the GL context before interpreter teardown unloads EGL under it.
            atexit.register(self._renderer.close)
        name = self._env.camera_name
        camera_id = (
            -1 if name is None else mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        )
        self._renderer.update_scene(
            self._env.data, camera=camera_id if camera_id >= 0 else _tracking_camera()
        )
        return self._renderer.render()


def _tracking_camera() -> mujoco.MjvCamera:
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    camera.trackbodyid = _TRACKING_CAMERA["trackbodyid"]
    camera.distance = _TRACKING_CAMERA["distance"]
    camera.lookat[:] = _TRACKING_CAMERA["lookat"]
    camera.elevation = _TRACKING_CAMERA["elevation"]
    return camera


def _numeric_attributes(task: object) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(task).items()
        if isinstance(value, (bool, int, float, np.number, np.ndarray))
        and (not isinstance(value, np.ndarray) or value.dtype.kind in "biuf")
    }


def hb_spec(name: str) -> EnvSpec:
    """The `EnvSpec` of `hb/<id>` (creates the env once, which takes up to a second).

    **Raises:** `MissingDependencyError` if HumanoidBench is not installed,
    `UnknownTaskError` if it has no such task.
    """
    slot = HumanoidBenchSlot(_registered_env_id(name))
    return EnvSpec(
        name=name,
        obs_dim=slot.obs_dim,
        action_dim=slot.action_dim,
        episode_length=slot.max_episode_steps,
        action_repeat=1,
        can_terminate=True,
    )


def make_hb_env(name: str, num_envs: int) -> HostEnv:
    """A `HostEnv` with `num_envs` independent instances of `hb/<robot>-<task>-v0`.

    **Raises:** `MissingDependencyError` if HumanoidBench is not installed,
    `UnknownTaskError` if it has no such task.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    env_id = _registered_env_id(name)
    slots = [HumanoidBenchSlot(env_id) for _ in range(num_envs)]
    spec = EnvSpec(
        name=name,
        obs_dim=slots[0].obs_dim,
        action_dim=slots[0].action_dim,
        episode_length=slots[0].max_episode_steps,
        action_repeat=1,
        can_terminate=True,
    )
    return HostEnv(HostBatch(spec, slots, identity=f"humanoid_bench/{env_id}"))
