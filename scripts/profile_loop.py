"""Where the compiled training loop spends its time on CPU: a `jax.profiler` trace of a few agent
steps of one configuration, summed by XLA operation kind.

    python scripts/profile_loop.py tdmpc2 --task dmc/cartpole-swingup --model-size 5m \\
        --set model.latent_dim=128 model.mlp_dim=128 model.enc_dim=256 model.num_q=2 \\
              planner.num_samples=256 planner.iterations=4

After a seed phase (`--seed-steps`, its pretraining burst included) and one untimed call of
`--steps` agent steps, one more call is timed and traced. Prints the wall time per agent step,
the XLA threads' busy time per step (busy cores = busy time / wall time) and the share of each
operation kind: the name XLA gives the operation without its number, e.g. `ynn_fusion` (matrix
products with fused elementwise work), `copy`, `transpose_copy_fusion`, `io_callback` (the host
simulator). `--trace-dir DIR` keeps the trace (TensorBoard's profile plugin or Perfetto read it).
"""

import argparse
import collections
import gzip
import json
import pathlib
import re
import sys
import tempfile
import time

import equinox as eqx
import jax

from pompc_eqx.loop import init_loop, make_train_chunk, seed_keys


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from benchmark_throughput import build  # noqa: E402


CONTAINERS = ("ThunkExecutor", "while", "conditional", "call")
"""Trace events that enclose other operations (counting them would count time twice)."""


def operation_times(trace: pathlib.Path) -> dict[str, float]:
    """Busy microseconds of the XLA compute threads per operation kind, from a trace.json.gz."""
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    times: dict[str, float] = collections.defaultdict(float)
    for e in events:
        thread = threads.get((e.get("pid"), e.get("tid")), "")
        if e.get("ph") != "X" or not thread.startswith("tf_XLA"):
            continue
        if e["name"].startswith(CONTAINERS) or thread.startswith("tf_XLAPjRt"):
            continue
        times[re.sub(r"\.\d+$", "", e["name"])] += e["dur"]
    return dict(times)


def parse_overrides(items: list[str]) -> dict[str, int | float]:
    """`group.field=value` pairs (numbers) as keyword arguments of `benchmark_throughput.build`."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if "." not in name or not value:
            raise SystemExit(f"error: --set takes group.field=value, got {item!r}")
        out[name] = float(value) if "." in value or "e" in value else int(value)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("preset")
    parser.add_argument("--task", default="jax/pendulum")
    parser.add_argument("--model-size", default="tiny")
    parser.add_argument("--num-seeds", type=int, default=1)
    parser.add_argument("--seed-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50, help="agent steps in the traced call")
    parser.add_argument("--set", nargs="*", default=[], help="group.field=value overrides")
    parser.add_argument("--top", type=int, default=15, help="operation kinds to list")
    parser.add_argument("--trace-dir", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)

    overrides = parse_overrides(args.set)
    cfg, schedule, env = build(
        args.task, args.preset, args.model_size, args.num_seeds, args.seed_steps, **overrides
    )
    state = eqx.filter_jit(init_loop)(cfg, schedule, env, seed_keys(0, args.num_seeds))
    seed_phase = eqx.filter_jit(make_train_chunk(cfg, schedule, env, args.seed_steps))
    chunk = eqx.filter_jit(make_train_chunk(cfg, schedule, env, args.steps))
    state, metrics = seed_phase(state)
    state, metrics = chunk(state)  # compiles the traced length
    jax.block_until_ready(metrics)

    trace_dir = args.trace_dir or pathlib.Path(tempfile.mkdtemp(prefix="profile-loop-"))
    with jax.profiler.trace(str(trace_dir)):
        tick = time.perf_counter()
        state, metrics = chunk(state)
        jax.block_until_ready(metrics)
        wall = time.perf_counter() - tick
    traces = sorted(trace_dir.glob("plugins/profile/*/*.trace.json.gz"))
    if not traces:
        raise SystemExit(f"error: jax.profiler wrote no trace.json.gz under {trace_dir}")
    times = operation_times(traces[-1])
    busy = sum(times.values())
    steps = args.steps
    print(
        f"{args.preset} {args.task} {args.model_size} x{args.num_seeds} seeds"
        + (f" ({' '.join(args.set)})" if args.set else "")
    )
    print(
        f"{1e3 * wall / steps:.2f} ms per agent step ({steps / wall:.2f} agent steps/s); XLA"
        f" threads busy {1e-3 * busy / steps:.2f} ms per step ({1e-6 * busy / wall:.2f} cores)"
    )
    print("| operation kind | ms per agent step | share of busy time |")
    print("|---|---:|---:|")
    for name, us in sorted(times.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"| {name} | {1e-3 * us / steps:.2f} | {100 * us / busy:.1f}% |")
    print(f"trace: {traces[-1]}")


if __name__ == "__main__":
    main()
