"""Agent steps per second of the compiled training loop, and the FLOPs of one agent step.

For each (task, preset, model size, number of seeds) this builds the pure training chunk
(`pompc_eqx.loop.make_train_chunk`), runs a short seed phase and its pretraining burst, then times
`--timed-steps` regular agent steps (per seed: one MPPI plan, one environment step, one buffer
write, one update; lazy reanalyze every k updates for bmpc/pompc).

FLOPs come from XLA's own cost analysis of the compiled functions
(`jax.jit(f).lower(...).compile().cost_analysis()["flops"]`), one seed:
- `plan`: encode one observation + one MPPI planning call (training mode);
- `update`: one update on a batch of `batch_size` subsequences;
- `reanalyze`: one lazy reanalyze (re-plans `reanalyze_batch` x H latent states), amortised
  over its interval (every k-th update); 0 for tdmpc2.
XLA's count of a `lax.scan` (a while loop) covers its body once, whatever the trip count, so
the whole chunk of 1 and of N agent steps is also analysed and the difference reported
(`chunk N - chunk 1`): it is ~0 when the body is counted once, which is why per-step FLOPs are
summed from the three functions above instead.

Achieved GFLOP/s (FLOPs per step x steps/s) is compared with this machine's measured float32
matmul throughput (a 2048 x 2048 `jnp.dot`, timed) and projected to one GPU at an assumed
sustained rate (`--gpu-tflops`, labelled as a projection). `--device-check` measures on the
machine it runs on instead (meant for a GPU; under 10 minutes) and writes its own page.

    python scripts/benchmark_throughput.py --flops-only                 # FLOPs table only (minutes)
    python scripts/benchmark_throughput.py --sizes tiny 1m --seeds 1 4  # FLOPs + timings
    python scripts/benchmark_throughput.py --device-check              # on a GPU machine
    python scripts/benchmark_throughput.py --sweep                     # a lambda grid: 1 vs 3 processes
"""

import argparse
import dataclasses
import datetime
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import benchmark_sweep  # scripts/ is on the path of a script
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from benchmark_core import random_batch

from pompc_eqx.agent import act, init_agent, update
from pompc_eqx.envs.registry import make_env, task_spec
from pompc_eqx.loop import Schedule, init_loop, make_train_chunk, seed_keys
from pompc_eqx.objectives import objective_class
from pompc_eqx.planner import reanalyze
from pompc_eqx.presets import PRESETS
from pompc_eqx.world_model import count_params


SECTION_MARK = benchmark_sweep.SECTION_MARK


GPU_ASSUMPTION = (
    "one H100 at ~60 TFLOP/s float32 dense peak, 30% of it sustained (18 TFLOP/s)",
    18.0,
)


def train_config(task: str, preset: str, size: str, num_seeds: int = 1, **overrides):
    """The preset's TrainConfig at `size`; `overrides` are `planner.num_samples=...`-style."""
    cfg = dataclasses.replace(
        PRESETS[preset][1], task=task, model_size=size, num_seeds=num_seeds, aim=False
    )
    for name, value in overrides.items():
        group, field = name.split(".")
        cfg = dataclasses.replace(
            cfg, **{group: dataclasses.replace(getattr(cfg, group), **{field: value})}
        )
    return cfg


def build(task: str, preset: str, size: str, num_seeds: int, seed_steps: int, **overrides):
    """(agent config, schedule, env) as a run of this configuration builds them."""
    cfg = train_config(task, preset, size, num_seeds, **overrides)
    spec = task_spec(task)
    agent_cfg = cfg.agent_config(spec.obs_dim, spec.action_dim, spec.episode_length)
    interval = (
        cfg.buffer.reanalyze_interval if objective_class(agent_cfg).reads_planner_gaussians else 0
    )
    schedule = Schedule(
        seed_steps=seed_steps,
        capacity=max(4 * seed_steps, 2_000),
        reanalyze_interval=interval,
        reanalyze_batch=cfg.buffer.reanalyze_batch,
    )
    return agent_cfg, schedule, make_env(task, num_seeds)


def xla_flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` by XLA's cost analysis of the compiled function."""
    dynamic, static = eqx.partition(args, eqx.is_array)
    pure = lambda d: eqx.filter(fn(*eqx.combine(d, static)), eqx.is_array)
    analysis = jax.jit(pure).lower(dynamic).compile().cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per computation
        analysis = analysis[0]
    return float(analysis.get("flops", 0.0))


ELEMENTWISE = frozenset(
    "add sub mul div max min neg exp exp2 log log1p expm1 tanh logistic sqrt rsqrt pow "
    "integer_pow square abs sign erf sin cos atan2".split()
)
REDUCTIONS = frozenset("reduce_sum reduce_max reduce_min cumsum cummax".split())


def jaxpr_flops(jaxpr, trip_counts: bool = True) -> float:
    """FLOPs of a jaxpr counted from its equations: 2 x M x N x K per `dot_general`, one per
    element of arithmetic and reductions; a `scan` body counts `length` times (once with
    `trip_counts=False`, which is how XLA's cost analysis counts it), a `cond` its costliest
    branch, a `while` body once (its trip count is not static)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name, params = eqn.primitive.name, eqn.params
        if name == "dot_general":
            (contract, _), _ = params["dimension_numbers"]
            k = math.prod(eqn.invars[0].aval.shape[d] for d in contract)
            total += 2 * k * math.prod(eqn.outvars[0].aval.shape)
        elif name == "scan":
            total += (params["length"] if trip_counts else 1) * jaxpr_flops(
                params["jaxpr"], trip_counts
            )
        elif name == "cond":
            total += max(jaxpr_flops(b, trip_counts) for b in params["branches"])
        elif name == "while":
            total += jaxpr_flops(params["body_jaxpr"], trip_counts)
        elif any(k in params for k in ("jaxpr", "call_jaxpr", "fun_jaxpr")):
            sub = next(params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in params)
            total += jaxpr_flops(sub, trip_counts)
        elif name in ELEMENTWISE:
            total += math.prod(eqn.outvars[0].aval.shape)
        elif name in REDUCTIONS:
            total += math.prod(eqn.invars[0].aval.shape)
    return total


def count_flops(fn, *args, xla: bool = True) -> dict[str, float]:
    """`flops` (jaxpr, scans x trip count), `once` (jaxpr, scan bodies once) and `xla`."""
    jaxpr = eqx.filter_make_jaxpr(fn)(*args)[0]
    out = {"flops": jaxpr_flops(jaxpr), "once": jaxpr_flops(jaxpr, trip_counts=False)}
    out["xla"] = xla_flops(fn, *args) if xla else float("nan")
    return out


def step_flops(
    task: str,
    preset: str,
    size: str,
    *,
    chunk_check: int = 0,
    parts: tuple[str, ...] = ("plan", "update", "reanalyze"),
    xla: bool = True,
    **overrides,
) -> dict[str, float]:
    """FLOPs of one agent step of one seed: plan, update, reanalyze (per call and amortised).

    `plan`, `update`, `reanalyze_call`, `reanalyze` (amortised) and `total` count every scan
    iteration (`jaxpr_flops`); `xla_*` are XLA's cost analysis of the same compiled functions
    (scan bodies once) and `once_*` the jaxpr count with scan bodies once, to check the two
    agree. With `chunk_check` = N > 1 it also runs XLA's cost analysis on the whole training
    chunk of 1 and of N steps (`chunk_1`, `chunk_n`). `parts` not listed count 0.
    """
    cfg, schedule, env = build(task, preset, size, 1, 8, **overrides)
    agent = init_agent(cfg, key=jr.key(0))
    key = jr.key(1)
    zero = {"flops": 0.0, "once": 0.0, "xla": 0.0}
    counts = {"plan": zero, "update": zero, "reanalyze_call": zero}
    if "plan" in parts:
        counts["plan"] = count_flops(
            lambda ag, o, w, k: act(ag, o, w, cfg=cfg, eval_mode=False, key=k),
            agent,
            jnp.zeros(cfg.obs_dim),
            jnp.zeros((cfg.planner.horizon, cfg.action_dim)),
            key,
            xla=xla,
        )
    if "update" in parts:
        counts["update"] = count_flops(
            lambda ag, b, k: update(ag, b, cfg=cfg, key=k),
            agent,
            random_batch(
                jr.key(2), cfg.planner.horizon, cfg.batch_size, cfg.obs_dim, cfg.action_dim
            ),
            key,
            xla=xla,
        )
    if "reanalyze" in parts and schedule.reanalyze_interval > 0:
        n = schedule.reanalyze_batch * cfg.planner.horizon
        counts["reanalyze_call"] = count_flops(
            lambda nets, zz, k: reanalyze(nets, zz, cfg=cfg.planner, discount=cfg.discount, key=k),
            agent.nets,
            jnp.zeros((n, cfg.model.latent_dim)),
            key,
            xla=xla,
        )
    every = schedule.reanalyze_interval
    nets = agent.nets
    out = {
        "params": count_params((nets.encoder, nets.dynamics, nets.reward, nets.policy, nets.value))
    }
    for prefix, field in (("", "flops"), ("xla_", "xla"), ("once_", "once")):
        for part, c in counts.items():
            out[prefix + part] = c[field]
        out[prefix + "reanalyze"] = out[prefix + "reanalyze_call"] / every if every else 0.0
        out[prefix + "total"] = (
            out[prefix + "plan"] + out[prefix + "update"] + out[prefix + "reanalyze"]
        )
    if chunk_check > 1:
        state = init_loop(cfg, schedule, env, seed_keys(0, 1))
        for n in (1, chunk_check):
            out[f"chunk_{'1' if n == 1 else 'n'}"] = xla_flops(
                make_train_chunk(cfg, schedule, env, n), state
            )
    return out


def matmul_gflops(n: int = 2048, repeats: int = 10) -> tuple[float, float]:
    """Measured float32 matmul throughput of the default device, GFLOP/s: (wall clock, CPU time).

    The first is FLOPs / median wall time. The second is FLOPs per CPU-second of this process
    times the number of CPUs: on a CPU shared with other jobs it estimates what all cores give
    when idle (the wall-clock figure drops with the load, the per-CPU-second one much less).
    """
    a = jr.normal(jr.key(0), (n, n), jnp.float32)
    b = jr.normal(jr.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        dot(a, b).block_until_ready()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    flops = 2 * n**3 / 1e9
    return flops / statistics.median(wall), flops / statistics.median(cpu) * (os.cpu_count() or 1)


def measure(
    task: str, preset: str, size: str, num_seeds: int, timed_steps: int, timed_calls: int = 1
) -> dict:
    """Steady agent steps/s of the compiled chunk after a short seed phase and its burst:
    `timed_calls` calls of `timed_steps` agent steps each, as the training driver makes them."""
    seed_steps = 8
    cfg, schedule, env = build(task, preset, size, num_seeds, seed_steps)
    state = eqx.filter_jit(init_loop)(cfg, schedule, env, seed_keys(0, num_seeds))
    tick = time.perf_counter()
    warm = eqx.filter_jit(make_train_chunk(cfg, schedule, env, seed_steps), donate="all")
    state, metrics = warm(state)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - tick
    chunk = eqx.filter_jit(make_train_chunk(cfg, schedule, env, timed_steps), donate="all")
    state, metrics = chunk(state)  # compile the timed length, warm caches
    jax.block_until_ready(metrics)
    tick = time.perf_counter()
    for _ in range(timed_calls):
        state, metrics = chunk(state)
        jax.device_get(metrics)
    seconds = time.perf_counter() - tick
    steps = timed_steps * timed_calls
    return {
        "steps_per_s": steps / seconds,
        "seed_steps_per_s": num_seeds * steps / seconds,
        "ms_per_step": 1000 * seconds / steps,
        "first_chunk_s": compile_s,
    }


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return (
            f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPU(s)"
        )
    except OSError:
        return platform.processor() or "unknown CPU"


def device_name() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"CPU ({cpu_name()})"
    return f"{dev.platform.upper()} ({getattr(dev, 'device_kind', '?')}, {len(jax.devices())} device(s))"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def write_table(
    rows: list[dict], out: pathlib.Path, command: str, meta: dict, gpu_tflops: float
) -> str:
    """The markdown page: FLOPs per agent step, time per step, achieved GFLOP/s vs the matmul
    rate, and (on CPU) the GPU projection."""
    wall_peak, cpu_peak = meta["matmul_gflops"]
    on_cpu = meta.get("platform", "cpu") == "cpu"
    peak = cpu_peak if on_cpu else wall_peak
    lines = [
        "# Training throughput and FLOPs per agent step",
        "",
        f"Command: `{command}`",
        "",
        f"Measured {meta['date']} on {meta['device']}, jax {jax.__version__}; load average",
        f"(1/5/15 min) before {meta['load_before']}, after {meta['load_after']}.",
        f"Measured float32 matmul throughput (2048 x 2048 `jnp.dot`): {wall_peak:.0f} GFLOP/s by",
        f"wall clock; {cpu_peak:.0f} GFLOP/s from the CPU time it used x the number of CPUs (the",
        "rate of an idle machine, nearly independent of the load). '% matmul' uses "
        + ("the second." if on_cpu else "the first."),
        "",
        "FLOPs of one agent step of one seed, in MFLOP: plan (encode + MPPI), update, lazy",
        "reanalyze amortised over its interval (per call in brackets), counted from the traced",
        "program with every scan iteration (MPPI iterations, horizon rollouts). 'XLA (bodies",
        "once)': XLA's cost analysis of the same compiled functions, which counts each scan",
        "body once; 'jaxpr (once)': our count with scan bodies once, which should match it.",
        "ms/step: wall time of one agent step of the whole compiled loop (all seeds).",
        "Achieved = seeds x total FLOPs x steps/s; '% matmul' = achieved / the measured matmul",
        "rate.",
    ]
    if on_cpu:
        lines += [
            f"'GPU steps/s (projection)' = total FLOPs / ({GPU_ASSUMPTION[0]}): an upper bound;",
            "steps this small are latency-bound on a GPU, so the real rate is lower",
            "(`--device-check` measures it).",
        ]
    proj_head = " GPU steps/s (projection) |" if on_cpu else ""
    lines += [
        "",
        "| task | preset | size | seeds | params | plan | update | reanalyze (per call) | total MFLOP "
        "| XLA (bodies once) | jaxpr (once) | ms/step | achieved GFLOP/s | % matmul |" + proj_head,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if on_cpu else ""),
    ]
    for r in rows:
        ms, seeds = r.get("ms_per_step"), r.get("seeds", 1)
        achieved = seeds * r["total"] / (ms / 1000) / 1e9 if ms else None
        cells = [
            r["task"],
            r["preset"],
            r["size"],
            str(seeds),
            f"{r['params']:,}",
            f"{r['plan'] / 1e6:.1f}",
            f"{r['update'] / 1e6:.1f}",
            f"{r['reanalyze'] / 1e6:.1f} ({r['reanalyze_call'] / 1e6:.0f})",
            f"{r['total'] / 1e6:.1f}",
            f"{r['xla_total'] / 1e6:.1f}",
            f"{r['once_total'] / 1e6:.1f}",
            "—" if ms is None else f"{ms:.0f}",
            "—" if achieved is None else f"{achieved:.1f}",
            "—" if achieved is None else f"{100 * achieved / peak:.0f}%",
        ]
        if on_cpu:
            cells.append(f"{gpu_tflops * 1e12 / r['total']:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    checks = [r for r in rows if "chunk_1" in r]
    if checks:
        lines += [
            "",
            "How XLA counts the scan: the whole training chunk (one seed) analysed at 1 and at N",
            "agent steps, MFLOP:",
            "",
            "| task | preset | size | chunk 1 | chunk N | N | XLA: plan + update + reanalyze call |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in checks:
            lines.append(
                f"| {r['task']} | {r['preset']} | {r['size']} | {r['chunk_1'] / 1e6:.1f} "
                f"| {r['chunk_n'] / 1e6:.1f} | {r['chunk_steps']} "
                f"| {(r['xla_plan'] + r['xla_update'] + r['xla_reanalyze_call']) / 1e6:.1f} |"
            )
    if meta.get("notes"):
        lines += ["", meta["notes"]]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Keep the lambda-sweep section (written by --sweep) when the tables are rewritten.
    old = out.read_text() if out.exists() else ""
    if SECTION_MARK in old:
        text = text.rstrip("\n") + "\n\n" + SECTION_MARK + old.split(SECTION_MARK, 1)[1]
    out.write_text(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["jax/pendulum"])
    parser.add_argument(
        "--presets", nargs="+", default=["tdmpc2", "bmpc", "pompc"], choices=sorted(PRESETS)
    )
    parser.add_argument("--sizes", nargs="+", default=["tiny", "1m", "5m"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds in the loop")
    parser.add_argument("--timed-steps", type=int, default=10, help="agent steps per timed call")
    parser.add_argument("--timed-calls", type=int, default=1, help="timed calls (each synced)")
    parser.add_argument("--flops-only", action="store_true", help="no timings")
    parser.add_argument(
        "--no-xla", action="store_true", help="skip XLA's cost analysis (no compilation)"
    )
    parser.add_argument(
        "--chunk-check", type=int, default=4, help="also analyse chunks of 1 and N steps (0: off)"
    )
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=GPU_ASSUMPTION[1],
        help="assumed sustained GPU float32 rate for the projection",
    )
    parser.add_argument(
        "--device-check",
        action="store_true",
        help="measure on this machine's accelerator (tdmpc2/bmpc/pompc x tiny/1m/5m on "
        "jax/pendulum, under 10 minutes); writes docs/results/throughput_device.md",
    )
    parser.add_argument("--budget-s", type=float, default=540, help="device-check time limit")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="instead: time a lambda x seed grid as one sweep vs one process per lambda "
        "(scripts/benchmark_sweep.py with its defaults); writes its section of the page",
    )
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--notes", type=pathlib.Path, default=None, help="markdown to append")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = ("python scripts/benchmark_throughput.py " + " ".join(sys.argv[1:])).strip()
    if args.sweep:
        out = ["--out", str(args.out)] if args.out else []
        benchmark_sweep.main(out, command=command)
        return
    if args.device_check:
        args.tasks, args.presets, args.sizes = (
            ["jax/pendulum"],
            ["tdmpc2", "bmpc", "pompc"],
            [
                "tiny",
                "1m",
                "5m",
            ],
        )
        args.flops_only, args.timed_steps = False, max(args.timed_steps, 20)
    out = args.out or pathlib.Path(
        "docs/results/throughput_device.md" if args.device_check else "docs/results/throughput.md"
    )
    start = time.perf_counter()
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "device": device_name(),
        "platform": jax.devices()[0].platform,
        "load_before": load_average(),
        "matmul_gflops": matmul_gflops(),
        "notes": args.notes.read_text() if args.notes else "",
    }
    print(f"matmul: {meta['matmul_gflops']} GFLOP/s on {meta['device']}", flush=True)
    rows = []
    for task in args.tasks:
        for preset in args.presets:
            for size in args.sizes:
                if args.device_check and rows and time.perf_counter() - start > args.budget_s:
                    print(f"budget spent; skipping {task} {preset} {size}", flush=True)
                    continue
                flops = {"task": task, "preset": preset, "size": size}
                check = args.chunk_check if not rows else 0  # once: it compiles the chunk twice
                flops.update(step_flops(task, preset, size, chunk_check=check, xla=not args.no_xla))
                flops["chunk_steps"] = args.chunk_check
                for n in [None] if args.flops_only else args.seeds:
                    row = dict(flops, seeds=n or 1)
                    if n is not None:
                        row.update(
                            measure(task, preset, size, n, args.timed_steps, args.timed_calls)
                        )
                    rows.append(row)
                    print(
                        f"{task} {preset} {size} seeds={n}: {row['total'] / 1e6:.1f} MFLOP/step"
                        + (f", {row['ms_per_step']:.0f} ms/step" if "ms_per_step" in row else ""),
                        flush=True,
                    )
                    meta["load_after"] = load_average()
                    write_table(rows, out, command, meta, args.gpu_tflops)
    print(f"wrote {out} ({(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
