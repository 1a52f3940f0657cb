"""Time the two compiled hot paths of the agent: one MPPI planning call and one update.

For every preset and model size this measures, on a task shaped like cartpole-swingup
(obs 5, action 1, episode length 500):
- **plan**: `planner.plan` on one latent state with the preset's planner (paper defaults:
  512 samples, 24 policy trajectories, 64 elites, 6 iterations, horizon 3), training mode;
- **update**: `agent.update` on one batch of `--batch-size` subsequences of H+1 observations.

Each function is jitted with `eqx.filter_jit`; the first call (compilation + one run) is timed
separately, then the median (and min) of `--repeats` calls, each followed by
`jax.block_until_ready`. The state is chained through the update calls as in training.
Writes a markdown report with the command, date, CPU, library versions and parameter counts.

    python scripts/benchmark_core.py --output docs/results/core_timings.md
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from pompc_eqx.agent import init_agent, update
from pompc_eqx.buffer import Batch
from pompc_eqx.config import MODEL_SIZES
from pompc_eqx.planner import plan
from pompc_eqx.presets import PRESETS
from pompc_eqx.world_model import count_params


OBS_DIM, ACTION_DIM, EPISODE_LENGTH = 5, 1, 500


def cpu_info() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", "?").strip()
        cores = fields.get("CPU(s)", "?").strip()
        return f"{model}, {cores} CPU(s)"
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """(first call incl. compilation, median, min) in seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), min(times)


def random_batch(
    key, horizon: int, batch_size: int, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM
) -> Batch:
    """A batch of random transitions with planner statistics in their valid ranges."""
    h, b, o, a = horizon, batch_size, obs_dim, action_dim
    k = jr.split(key, 5)
    return Batch(
        obs=jr.normal(k[0], (h + 1, b, o)),
        action=jr.uniform(k[1], (h, b, a), minval=-1, maxval=1),
        reward=jr.uniform(k[2], (h, b)),
        terminated=jnp.zeros((h, b)),
        plan_mean=jr.uniform(k[3], (h + 1, b, a), minval=-1, maxval=1),
        plan_std=jr.uniform(k[4], (h + 1, b, a), minval=0.05, maxval=2.0),
    )


def bench(preset: str, size: str, batch_size: int, repeats: int) -> dict:
    train_cfg = dataclasses.replace(PRESETS[preset][1], model_size=size)
    cfg = train_cfg.agent_config(OBS_DIM, ACTION_DIM, EPISODE_LENGTH)
    state = init_agent(cfg, key=jr.key(0))
    nets = state.nets
    params = count_params(nets)
    core = count_params((nets.encoder, nets.dynamics, nets.reward, nets.policy, nets.value))

    plan_fn = eqx.filter_jit(
        lambda nets, z, warm, key: plan(
            nets, z, warm, cfg=cfg.planner, discount=cfg.discount, eval_mode=False, key=key
        )
    )
    z = eqx.filter_jit(lambda nets, obs: nets.encode(obs))(nets, jnp.zeros(OBS_DIM))
    warm = jnp.zeros((cfg.planner.horizon, ACTION_DIM))
    plan_keys = iter(jr.split(jr.key(1), repeats + 1))
    plan_first, plan_median, plan_min = timed(
        lambda: plan_fn(nets, z, warm, next(plan_keys)), repeats
    )

    update_fn = eqx.filter_jit(lambda state, batch, key: update(state, batch, cfg=cfg, key=key))
    batch = random_batch(jr.key(2), cfg.planner.horizon, batch_size)
    box = {"state": state, "i": 0}

    def one_update():
        box["i"] += 1
        box["state"], metrics = update_fn(box["state"], batch, jr.key(100 + box["i"]))
        return box["state"], metrics

    update_first, update_median, update_min = timed(one_update, repeats)
    return dict(
        preset=preset,
        size=size,
        params=params,
        core_params=core,
        plan_first=plan_first,
        plan_median=plan_median,
        plan_min=plan_min,
        update_first=update_first,
        update_median=update_median,
        update_min=update_min,
    )


def markdown(rows: list[dict], args, command: str, load_before: str, load_after: str) -> str:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("jax", "jaxlib", "equinox", "optax")
    )
    planner = PRESETS["pompc"][1].planner
    lines = [
        "# Core timings: one planning call and one update",
        "",
        "Written by `scripts/benchmark_core.py`. Task shaped like cartpole-swingup (obs 5, "
        "action 1);",
        f"planner: {planner.num_samples} samples, {planner.iterations} iterations, "
        f"horizon {planner.horizon}; update batch {args.batch_size}. Median and min of "
        f"{args.repeats} calls after a first call that includes compilation; every call ends "
        "with `jax.block_until_ready`.",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_info()}; JAX backend: {jax.default_backend()} ({jax.device_count()} device)",
        f"- versions: Python {platform.python_version()}, {versions}",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_after}. The benchmark "
        "itself keeps about one core busy; a higher load means other jobs shared the machine, "
        "which makes the numbers pessimistic and only roughly comparable between rows.",
        "",
        "| preset | size | params (all nets) | params (h, d, R, pi, Q) | plan median [ms] "
        "| plan min [ms] | plan 1st call [s] | update median [ms] | update min [ms] "
        "| update 1st call [s] |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['size']} | {r['params']:,} | {r['core_params']:,} "
            f"| {1e3 * r['plan_median']:.2f} | {1e3 * r['plan_min']:.2f} | {r['plan_first']:.1f} "
            f"| {1e3 * r['update_median']:.1f} | {1e3 * r['update_min']:.1f} "
            f"| {r['update_first']:.1f} |"
        )
    lines += [
        "",
        "`params (all nets)` counts every network the preset builds (PO-MPC adds the prior and the",
        "Q^lambda ensemble); `params (h, d, R, pi, Q)` is the TD-MPC2 model alone.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", nargs="+", default=["tiny", "1m", "5m"], choices=sorted(MODEL_SIZES)
    )
    parser.add_argument(
        "--presets", nargs="+", default=["tdmpc2", "pompc"], choices=sorted(PRESETS)
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", default="docs/results/core_timings.md")
    args = parser.parse_args(argv)
    command = "python " + " ".join(
        ["scripts/benchmark_core.py", *(sys.argv[1:] if argv is None else argv)]
    )

    load_before = load_average()
    rows = []
    for preset in args.presets:
        for size in args.sizes:
            row = bench(preset, size, args.batch_size, args.repeats)
            rows.append(row)
            print(
                f"{preset:7s} {size:5s} params {row['params']:>10,}"
                f"  plan {1e3 * row['plan_median']:8.2f} ms"
                f" (1st {row['plan_first']:.1f} s)  update {1e3 * row['update_median']:9.1f} ms"
                f" (1st {row['update_first']:.1f} s)",
                flush=True,
            )
    text = markdown(rows, args, command, load_before, load_average())
    print()
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
