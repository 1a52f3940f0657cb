"""Time one agent step through the compiled io_callback path against raw host stepping.

For each task and slot count this measures
- **callback**: `make_env(task, slots)` stepped by a jitted `lax.scan` of `--steps` agent
  steps with uniform random actions drawn on device (what the training loop does);
- **raw**: the same number of simulator instances stepped directly from a Python loop with the
  same action repeat and precomputed random actions: `env.step` twice per agent step for
  dm_control (rewards summed), `env.step` once for HumanoidBench; episodes are reset at
  the same boundaries. Observations are left as dm_control returns them (dicts), so the raw
  loop does *less* work than the adapter, which also flattens them to float32.

Each number is the best of `--repeats` timed runs after a warm-up run (which includes
compilation), in microseconds per agent step of the whole batch. Writes a markdown report.

    python scripts/benchmark_envs.py --output docs/results/envs.md
"""

import argparse
import datetime
import importlib.metadata
import platform
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.experimental import io_callback

from pompc_eqx.envs import make_env, task_spec
from pompc_eqx.envs.dmc import ACTION_REPEAT, EPISODE_LENGTH, parse_dmc_task
from pompc_eqx.envs.humanoid_bench import humanoid_bench_available

DMC_TASKS = ("dmc/cartpole-swingup", "dmc/walker-walk", "dmc/humanoid-walk", "dmc/dog-run")
HB_TASKS = ("hb/h1hand-walk-v0",)


def callback_runner(task: str, num_envs: int, steps: int):
    """A function that runs `steps` agent steps through `HostEnv.step` in one jitted scan."""
    env = make_env(task, num_envs)
    action_dim = env.spec.action_dim

    @jax.jit
    def run(state, key):
        def body(state, step_key):
            action = jr.uniform(step_key, (num_envs, action_dim), minval=-1.0, maxval=1.0)
            state, timestep = env.step(state, action)
            return state, timestep.reward

        return jax.lax.scan(body, state, jr.split(key, steps))

    state, _ = env.reset(jr.split(jr.key(0), num_envs))
    box = {"state": state, "calls": 0}

    def go():
        box["calls"] += 1
        box["state"], rewards = jax.block_until_ready(run(box["state"], jr.key(box["calls"])))
        assert bool(jnp.all(jnp.isfinite(rewards)))

    return go


def noop_callback_runner(num_envs: int, obs_dim: int, action_dim: int, steps: int):
    """The same scan with a host function that does nothing: the cost of the callback itself."""
    out = np.zeros((num_envs, 2 * obs_dim + 4), np.float32)
    shape = jax.ShapeDtypeStruct(out.shape, jnp.float32)

    @jax.jit
    def run(key):
        def body(token, step_key):
            action = jr.uniform(step_key, (num_envs, action_dim), minval=-1.0, maxval=1.0)
            packed = jnp.concatenate([action, token[:, None]], axis=1)
            result = io_callback(lambda packed: out, shape, packed, ordered=True)
            return result[:, -1], result[:, 0]

        return jax.lax.scan(body, jnp.zeros(num_envs), jr.split(key, steps))

    return lambda: jax.block_until_ready(run(jr.key(0)))


def _raw_dmc(task: str, num_envs: int):
    from dm_control import suite

    domain, name = parse_dmc_task(task)
    envs = [suite.load(domain, name, task_kwargs={"random": seed}) for seed in range(num_envs)]
    action_dim = envs[0].action_spec().shape[0]

    def reset(env):
        env.reset()

    def step(env, action):
        reward = 0.0
        for _ in range(ACTION_REPEAT):
            reward += env.step(action).reward
        return False

    return envs, action_dim, EPISODE_LENGTH, reset, step


def _raw_hb(task: str, num_envs: int):
    import gymnasium as gym

    made = [
        gym.make(task.removeprefix("hb/"), render_mode=None, disable_env_checker=True)
        for _ in range(num_envs)
    ]
    envs = [env.unwrapped for env in made]
    action_dim = envs[0].action_space.shape[0]

    def reset(env):
        env.reset()

    def step(env, action):
        return env.step(action)[2]

    return envs, action_dim, made[0].spec.max_episode_steps, reset, step


def raw_runner(task: str, num_envs: int, steps: int):
    """A function that runs `steps` agent steps of raw simulators from a Python loop."""
    envs, action_dim, episode_length, reset, step = (
        _raw_hb if task.startswith("hb/") else _raw_dmc
    )(task, num_envs)
    for env in envs:
        reset(env)
    t = [0] * num_envs
    rng = np.random.default_rng(0)
    dtype = np.float32 if task.startswith("hb/") else np.float64

    def go():
        actions = rng.uniform(-1, 1, (steps, num_envs, action_dim)).astype(dtype)
        for step_actions in actions:
            for i, env in enumerate(envs):
                terminated = step(env, step_actions[i])
                t[i] += 1
                if terminated or t[i] >= episode_length:
                    reset(env)
                    t[i] = 0

    return go


def best_times(runners: dict, repeats: int, steps: int) -> dict[str, float]:
    """Microseconds per agent step: best of `repeats` runs, the runners interleaved so that
    load from other processes affects all of them alike. The first run of each is a warm-up."""
    for go in runners.values():
        go()
    best = {name: float("inf") for name in runners}
    for _ in range(repeats):
        for name, go in runners.items():
            start = time.perf_counter()
            go()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds / steps * 1e6 for name, seconds in best.items()}


def _versions() -> str:
    names = ("jax", "jaxlib", "mujoco", "dm-control", "numpy", "gymnasium")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def _load() -> str:
    return " / ".join(open("/proc/loadavg").read().split()[:3]) if sys.platform == "linux" else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="agent steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (best is kept)")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: 4 dmc (+hb) tasks")
    parser.add_argument("--output", default=None, help="markdown file to write")
    args = parser.parse_args()

    tasks = args.tasks or [*DMC_TASKS, *(HB_TASKS if humanoid_bench_available() else ())]
    load_before = _load()
    rows = []
    for task in tasks:
        spec = task_spec(task)
        for num_envs in args.slots:
            runners = {
                "raw": raw_runner(task, num_envs, args.steps),
                "callback": callback_runner(task, num_envs, args.steps),
                "noop": noop_callback_runner(num_envs, spec.obs_dim, spec.action_dim, args.steps),
            }
            times = best_times(runners, args.repeats, args.steps)
            raw, callback = times["raw"], times["callback"]
            row = (task, num_envs, raw, callback, callback - raw, times["noop"])
            rows.append(row)
            print(
                "{:<20} slots={} raw {:7.1f} us  callback {:7.1f} us  added {:+6.1f} us "
                "(no-op callback {:5.1f} us)  overhead {:+.1f}%".format(
                    *row, 100 * (callback - raw) / raw
                ),
                flush=True,
            )
    if args.output is not None:
        write_report(args, rows, load_before, _load())


def write_report(args, rows, load_before: str, load_after: str) -> None:
    command = " ".join(["python scripts/benchmark_envs.py", *sys.argv[1:]])
    lines = [
        "# Host environments: callback path vs raw stepping",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()} "
        f"({platform.machine()}, {jax.device_count()} CPU device(s), {_versions()}).",
        f"Load average (1/5/15 min) before: {load_before}; after: {load_after}.",
        "",
        f"Microseconds per agent step of the whole batch (all slots), best of {args.repeats} "
        f"runs of {args.steps} agent steps after a warm-up run, the three variants interleaved. "
        f"dm_control tasks use action repeat {ACTION_REPEAT}, HumanoidBench none.",
        "",
        "- *raw*: a Python loop calling each simulator's `step` directly (dm_control "
        "`Environment.step` twice, HumanoidBench's gymnasium `step` once), with precomputed "
        "random actions, resetting at the same episode boundaries; observations are left as "
        "the simulator returns them (not flattened).",
        "- *callback*: `make_env(task, slots)` stepped by a jitted `lax.scan` with random "
        "actions drawn on device: one batched `io_callback` per agent step, which also "
        "flattens observations and handles time limits and auto-resets on the host.",
        "- *no-op callback*: the same scan and array shapes with a host function that does "
        "nothing: the fixed cost of one `io_callback` round trip.",
        "",
        "| task | slots | raw | callback | added | overhead | no-op callback |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task, num_envs, raw, callback, added, noop in rows:
        lines.append(
            f"| {task} | {num_envs} | {raw:.1f} | {callback:.1f} | {added:+.1f} | "
            f"{100 * added / raw:+.1f}% | {noop:.1f} |"
        )
    lines.append("")
    with open(args.output, "w") as file:
        file.write("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
