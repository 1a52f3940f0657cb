"""Time one agent step through the compiled io_callback path against raw host stepping.

For each task and slot count this measures
- **raw**: the same number of simulator instances stepped directly from a Python loop with
  the same action repeat and precomputed random actions: `Environment.step` twice per agent
  step for dm_control (rewards summed), the gymnasium `step` once for HumanoidBench; episodes
  are reset at the same boundaries. Observations are left as the simulator returns them, so
  this loop does *less* work than the adapter (which also flattens them to float32);
- **callback**: `make_env(task, slots)` stepped by a jitted `lax.scan` with uniform random
  actions drawn on device, one batched `io_callback` per agent step (what the training loop
  does). The time spent inside the host function is recorded separately;
- **host alone**: the adapter's host function (`HostBatch.step_packed`) called from a plain
  Python loop, without JAX: the adapter's own work;
- **no-op callback**: the callback scan with the same shapes and a host function that does
  nothing: the fixed cost of one `io_callback` round trip.

Each number is the best of `--repeats` runs after a warm-up run (which includes compiling),
the variants interleaved, in microseconds per agent step of the whole batch.

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


class Runner:
    """A benchmark variant: `run()` does `steps` agent steps; `inside` accumulates seconds
    spent in the host function (for the callback variant)."""

    def __init__(self, run, inside: list[float] | None = None):
        self.run = run
        self.inside = inside


def callback_runner(task: str, num_envs: int, steps: int) -> Runner:
    """`steps` agent steps through `HostEnv.step` in one jitted scan."""
    env = make_env(task, num_envs)
    action_dim = env.spec.action_dim
    inside = [0.0]
    host_step = env.host.step_packed

    def timed_host_step(packed):
        start = time.perf_counter()
        out = host_step(packed)
        inside[0] += time.perf_counter() - start
        return out

    # Measurement only: the jitted step picks up this instance attribute when it is traced.
    env.host.step_packed = timed_host_step

    @jax.jit
    def scan(state, key):
        def body(state, step_key):
            action = jr.uniform(step_key, (num_envs, action_dim), minval=-1.0, maxval=1.0)
            state, timestep = env.step(state, action)
            return state, timestep.reward

        return jax.lax.scan(body, state, jr.split(key, steps))

    state, _ = env.reset(jr.split(jr.key(0), num_envs))
    box = {"state": state, "calls": 0}

    def run():
        box["calls"] += 1
        box["state"], rewards = jax.block_until_ready(scan(box["state"], jr.key(box["calls"])))
        assert bool(jnp.all(jnp.isfinite(rewards)))

    return Runner(run, inside)


def host_alone_runner(task: str, num_envs: int, steps: int) -> Runner:
    """The adapter's host function called from a Python loop, without JAX."""
    env = make_env(task, num_envs)
    env.reset(jr.split(jr.key(0), num_envs))
    host, action_dim = env.host, env.spec.action_dim
    packed = np.zeros((num_envs, action_dim + 1), np.float32)
    rng = np.random.default_rng(0)

    def run():
        actions = rng.uniform(-1, 1, (steps, num_envs, action_dim)).astype(np.float32)
        for step_actions in actions:
            packed[:, :action_dim] = step_actions
            packed[:, action_dim] = host.t
            host.step_packed(packed)

    return Runner(run)


def noop_callback_runner(num_envs: int, obs_dim: int, action_dim: int, steps: int) -> Runner:
    """The callback scan with a host function that does nothing."""
    out = np.zeros((num_envs, 2 * obs_dim + 4), np.float32)
    shape = jax.ShapeDtypeStruct(out.shape, jnp.float32)

    @jax.jit
    def scan(key):
        def body(token, step_key):
            action = jr.uniform(step_key, (num_envs, action_dim), minval=-1.0, maxval=1.0)
            packed = jnp.concatenate([action, token[:, None]], axis=1)
            result = io_callback(lambda packed: out, shape, packed, ordered=True)
            return result[:, -1], result[:, 0]

        return jax.lax.scan(body, jnp.zeros(num_envs), jr.split(key, steps))

    return Runner(lambda: jax.block_until_ready(scan(jr.key(0))))


def _raw_dmc(task: str, num_envs: int):
    from dm_control import suite

    domain, name = parse_dmc_task(task)
    envs = [suite.load(domain, name, task_kwargs={"random": seed}) for seed in range(num_envs)]

    def step(env, action):
        reward = 0.0
        for _ in range(ACTION_REPEAT):
            reward += env.step(action).reward
        return False

    return envs, envs[0].action_spec().shape[0], EPISODE_LENGTH, np.float64, step


def _raw_hb(task: str, num_envs: int):
    import gymnasium as gym

    env_id = task.removeprefix("hb/")
    made = [gym.make(env_id, render_mode=None, disable_env_checker=True) for _ in range(num_envs)]
    envs = [env.unwrapped for env in made]

    def step(env, action):
        return env.step(action)[2]

    limit = made[0].spec.max_episode_steps
    return envs, envs[0].action_space.shape[0], limit, np.float32, step


def raw_runner(task: str, num_envs: int, steps: int) -> Runner:
    """Raw simulators stepped from a Python loop."""
    make = _raw_hb if task.startswith("hb/") else _raw_dmc
    envs, action_dim, episode_length, dtype, step = make(task, num_envs)
    for env in envs:
        env.reset()
    t = [0] * num_envs
    rng = np.random.default_rng(0)

    def run():
        actions = rng.uniform(-1, 1, (steps, num_envs, action_dim)).astype(dtype)
        for step_actions in actions:
            for i, env in enumerate(envs):
                terminated = step(env, step_actions[i])
                t[i] += 1
                if terminated or t[i] >= episode_length:
                    env.reset()
                    t[i] = 0

    return Runner(run)


def best_times(runners: dict[str, Runner], repeats: int, steps: int) -> dict[str, float]:
    """Microseconds per agent step: the best of `repeats` interleaved runs of each runner
    (after one warm-up run each); `"inside"` is the host-function time of the best callback
    run."""
    for runner in runners.values():
        runner.run()
    best = {name: float("inf") for name in runners}
    best["inside"] = float("inf")
    for _ in range(repeats):
        for name, runner in runners.items():
            if runner.inside is not None:
                runner.inside[0] = 0.0
            start = time.perf_counter()
            runner.run()
            elapsed = time.perf_counter() - start
            if elapsed < best[name]:
                best[name] = elapsed
                if runner.inside is not None:
                    best["inside"] = runner.inside[0]
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
    if sys.platform != "linux":
        return "?"
    with open("/proc/loadavg") as file:
        return " / ".join(file.read().split()[:3])


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
                "alone": host_alone_runner(task, num_envs, args.steps),
                "noop": noop_callback_runner(num_envs, spec.obs_dim, spec.action_dim, args.steps),
            }
            times = best_times(runners, args.repeats, args.steps)
            rows.append((task, num_envs, times))
            overhead = 100 * (times["callback"] - times["raw"]) / times["raw"]
            print(
                f"{task:<20} slots={num_envs}  raw {times['raw']:7.1f}  callback "
                f"{times['callback']:7.1f} ({overhead:+.1f}%)  host alone {times['alone']:7.1f}"
                f"  inside {times['inside']:7.1f}  no-op {times['noop']:5.1f}",
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
        f"runs of {args.steps} agent steps after a warm-up run, the variants interleaved. "
        f"dm_control tasks use action repeat {ACTION_REPEAT}, HumanoidBench none.",
        "",
        "- *raw*: a Python loop calling each simulator's `step` directly (dm_control "
        "`Environment.step` twice, HumanoidBench's gymnasium `step` once), with precomputed "
        "random actions, resetting at the same episode boundaries; observations are left as "
        "the simulator returns them (not flattened).",
        "- *callback*: `make_env(task, slots)` stepped by a jitted `lax.scan` with random "
        "actions drawn on device: one batched `io_callback` per agent step. *overhead* is "
        "callback vs raw.",
        "- *host alone*: the adapter's host function `HostBatch.step_packed` (stepping, "
        "flattening, time limits, auto-resets) called from a plain Python loop, without JAX.",
        "- *inside*: the time spent in that same host function during the *callback* run; "
        "*JAX side* = callback - inside (the scan, the `io_callback` machinery).",
        "- *no-op callback*: the callback scan with the same shapes and a host function that "
        "does nothing: the fixed cost of one `io_callback` round trip.",
        "",
        "| task | slots | raw | callback | **overhead** | host alone | inside | JAX side "
        "| no-op callback |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task, num_envs, t in rows:
        overhead = 100 * (t["callback"] - t["raw"]) / t["raw"]
        lines.append(
            f"| {task} | {num_envs} | {t['raw']:.1f} | {t['callback']:.1f} | "
            f"**{overhead:+.1f}%** | {t['alone']:.1f} | {t['inside']:.1f} | "
            f"{t['callback'] - t['inside']:.1f} | {t['noop']:.1f} |"
        )
    one_slot = [
        (task, 100 * (t["callback"] - t["raw"]) / t["raw"]) for task, n, t in rows if n == 1
    ]
    met = [f"{task} ({pct:+.0f}%)" for task, pct in one_slot if pct <= 25.0]
    missed = [f"{task} ({pct:+.0f}%)" for task, pct in one_slot if pct > 25.0]
    lines += [
        "",
        "## Reading the numbers",
        "",
        f"Target: at most +25% over raw stepping at 1 slot. Met by: {', '.join(met) or 'none'}."
        f" Missed by: {', '.join(missed) or 'none'}.",
        "",
        "- The adapter's own host work (*host alone*) is no more than raw stepping, and less "
        "for tasks with expensive observations (humanoid, dog): it computes the observation "
        "once per agent step instead of once per control step and skips `dm_env.TimeStep` "
        "bookkeeping.",
        "- Every `io_callback` has a fixed cost (*no-op callback*): before calling the host "
        "function, `jax.experimental.io_callback` `device_put`s its operand into a JAX array "
        "(about 20 us per operand, which is why actions and step counters travel packed in "
        "one array, and all results in one), then takes the GIL and checks the results.",
        "- Next to a real simulator both sides get slower than in isolation: *inside* exceeds "
        "*host alone*, and *JAX side* exceeds *no-op callback*. JAX's callback machinery and "
        "dm_control's Python layer are both long Python code paths that alternate on one core "
        "and evict each other from its caches. MuJoCo's C stepping itself is barely affected, "
        "so the relative overhead falls as the simulator gets heavier.",
        "- There is one callback per agent step for the whole batch, so the overhead shrinks "
        "with more slots (the JAX side still grows somewhat with them, through the cache "
        "effect above). Next to a planning call of the agent (milliseconds even for tiny "
        "models), the added time per agent step is small.",
        "- Why the 25% target is out of reach for the cheapest simulators: the *no-op callback* "
        "floor alone is a third of a ~100 us cartpole step, and it is JAX's own cost (the "
        "public `io_callback` offers no way around it). The loop calls back once per agent step "
        "for all seeds, and an agent step also plans and updates (8 ms or more even for the "
        "tiny model, see core_timings.md), so the callback adds well under 2% to training.",
        "- The load averages above include the benchmark itself (about one core); higher values "
        "mean other jobs shared the 2 cores and the numbers are pessimistic.",
        "",
    ]
    with open(args.output, "w") as file:
        file.write("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
