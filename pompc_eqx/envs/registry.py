"""Task registry: one task name gives one batched environment.

Names have a prefix saying where the task runs:
- `jax/<name>`: JAX-native tasks, on device (`jax_envs.JAX_TASKS`);
- `dmc/<domain>-<task>`: dm_control suite tasks, on the host (`dmc.DMC_TASKS`);
- `hb/<robot>-<task>-v0`: HumanoidBench tasks, on the host (optional dependency).

`dmc` and `humanoid_bench` are imported on first use: importing dm_control takes about half a
second and picks MuJoCo's OpenGL backend from `MUJOCO_GL` at that moment.
"""

import difflib
from typing import TYPE_CHECKING

import jax

from .base import AbstractEnv, EnvSpec
from .errors import MissingDependencyError, UnknownTaskError
from .jax_envs import JAX_TASKS, jax_task_spec, make_jax_env


if TYPE_CHECKING:
    from jax.sharding import Mesh

PREFIXES: tuple[str, ...] = ("jax/", "dmc/", "hb/")


def make_env(task: str, num_envs: int, **options: object) -> AbstractEnv:
    """Build `num_envs` independent episodes (one per seed) of `task`.

    **Arguments:**
    - `task`: a task name such as `jax/pendulum`, `dmc/walker-walk` or `hb/h1hand-walk-v0`.
    - `num_envs`: the number of slots (seeds); `reset` takes that many keys.
    - `options`: none are accepted at present (termination masking, the "episodic" switch,
        belongs to the training code: every env reports terminations faithfully).

    **Returns:** an `AbstractEnv`. Evaluation needs its own instance: host simulators are not
    shared between instances.

    **Raises:** `UnknownTaskError` for an unknown name, `MissingDependencyError` for an `hb/`
    task when HumanoidBench is not installed.
    """
    if options:
        raise TypeError(
            f"make_env got unexpected options {sorted(options)}; environments take none "
            "(the episodic switch is a training option)"
        )
    match _kind(task):
        case "jax":
            return make_jax_env(task, num_envs)
        case "dmc":
            from . import dmc

            return dmc.make_dmc_env(task, *dmc.parse_dmc_task(task), num_envs)
        case "hb":
            from . import humanoid_bench

            return humanoid_bench.make_hb_env(task, num_envs)
        case kind:
            raise AssertionError(f"unhandled task kind {kind!r}")


def make_sharded_env(task: str, num_envs: int, mesh: "Mesh") -> AbstractEnv:
    """`make_env` for a run whose `num_envs` runs are sharded over `mesh` (axis `seed`): with
    several processes, a host-simulated task gets simulators only for this process's runs
    (`sharded.ShardedHostEnv`); otherwise the same as `make_env`."""
    if jax.process_count() == 1 or _kind(task) == "jax":
        return make_env(task, num_envs)
    from .sharded import ShardedHostEnv

    return ShardedHostEnv(lambda n: make_env(task, n), mesh, num_envs)


def task_spec(task: str) -> EnvSpec:
    """The `EnvSpec` of `task` without building a batch (dm_control and HumanoidBench tasks
    are loaded once per process and cached).

    **Raises:** as `make_env`.
    """
    match _kind(task):
        case "jax":
            return jax_task_spec(task)
        case "dmc":
            from . import dmc

            return dmc.dmc_spec(task, *dmc.parse_dmc_task(task))
        case "hb":
            from . import humanoid_bench

            return humanoid_bench.hb_spec(task)
        case kind:
            raise AssertionError(f"unhandled task kind {kind!r}")


def list_tasks() -> list[EnvSpec]:
    """Specs of every available task: the JAX-native tasks, every dm_control suite task and,
    if HumanoidBench is installed, its 14 h1hand locomotion tasks (other registered
    HumanoidBench ids also work with `make_env`). Loads each host task once (seconds)."""
    from . import dmc, humanoid_bench

    specs = [jax_task_spec(name) for name in JAX_TASKS]
    specs += [task_spec(name) for name in dmc.DMC_TASKS]
    if humanoid_bench.humanoid_bench_available():
        specs += [task_spec(name) for name in humanoid_bench.H1HAND_LOCOMOTION_TASKS]
    return specs


def canonical_task_name(task: str) -> str:
    """The listed spelling of `task` (e.g. `dmc/cup-catch` -> `dmc/ball_in_cup-catch`)."""
    match _kind(task):
        case "dmc":
            from . import dmc

            return dmc.canonical_dmc_name(*dmc.parse_dmc_task(task))
        case _:
            return task


def _kind(task: str) -> str:
    if task in JAX_TASKS:
        return "jax"
    if task.startswith("dmc/"):
        from . import dmc

        if dmc.parse_dmc_task(task) is not None:
            return "dmc"
    if task.startswith("hb/"):
        return "hb"
    raise UnknownTaskError(_unknown_message(task))


def _unknown_message(task: str) -> str:
    from . import dmc, humanoid_bench

    names = [*JAX_TASKS, *dmc.DMC_TASKS, *dmc.DMC_ALIASES, *humanoid_bench.H1HAND_LOCOMOTION_TASKS]
    close = difflib.get_close_matches(task, names, n=3, cutoff=0.6)
    # Also compare without prefixes, so that `cartpole-swingup` finds `dmc/cartpole-swingup`.
    bare = {name.split("/", 1)[1]: name for name in names}
    close += [bare[b] for b in difflib.get_close_matches(task.split("/")[-1], list(bare), n=3)]
    close = list(dict.fromkeys(close))[:3]
    return (
        f"unknown task {task!r}: task names start with {', '.join(map(repr, PREFIXES))} "
        f"(jax/ on device, dmc/<domain>-<task> and hb/<robot>-<task>-v0 on the host; "
        f"scripts/list_tasks.py lists them); closest matches: {', '.join(close) or 'none'}"
    )


__all__ = [
    "PREFIXES",
    "MissingDependencyError",
    "UnknownTaskError",
    "canonical_task_name",
    "list_tasks",
    "make_env",
    "task_spec",
]
