"""Agent steps per second of the compiled training loop (planning + update) vs seeds and size.

For each (task, preset, model size, number of seeds) it builds a `Trainer`, runs the seed phase
and the pretraining burst (kept short), then times `--timed-steps` regular agent steps (one plan,
one update per step per seed, lazy reanalyze every 10 updates for bmpc/pompc) and writes a
markdown table to `docs/results/throughput.md`.

    python scripts/benchmark_throughput.py                      # the full grid (about an hour on 2 cores)
    python scripts/benchmark_throughput.py --sizes tiny --seeds 1 4 --tasks jax/pendulum
"""

import argparse
import dataclasses
import datetime
import pathlib
import platform
import subprocess
import sys
import time

import jax

from pompc_eqx.experiment import Trainer
from pompc_eqx.presets import PRESETS


def measure(task: str, preset: str, size: str, num_seeds: int, timed_steps: int) -> dict:
    base = PRESETS[preset][1]
    seed_steps = 8
    cfg = dataclasses.replace(
        base,
        task=task,
        model_size=size,
        num_seeds=num_seeds,
        steps=10_000_000,
        seed_steps=seed_steps,
        aim=False,
        progress=False,
    )
    trainer = Trainer(cfg)
    state = trainer.init_state()
    tick = time.perf_counter()
    warm = trainer.chunk_fn(seed_steps)  # seed phase + burst (compiles the step once)
    state, metrics, _ = warm(state)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - tick
    chunk = trainer.chunk_fn(timed_steps)
    state, metrics, _ = chunk(state)  # compile the timed length, warm caches
    jax.block_until_ready(metrics)
    tick = time.perf_counter()
    state, metrics, _ = chunk(state)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - tick
    return {
        "task": task,
        "preset": preset,
        "size": size,
        "seeds": num_seeds,
        "steps_per_s": timed_steps / seconds,
        "seed_steps_per_s": num_seeds * timed_steps / seconds,
        "ms_per_step": 1000 * seconds / timed_steps,
        "first_chunk_s": compile_s,
    }


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} cores"
    except OSError:
        return platform.processor() or "unknown CPU"


def write_table(rows: list[dict], out: pathlib.Path, command: str, elapsed: float) -> None:
    by_key = {(r["task"], r["preset"], r["size"]): {} for r in rows}
    for r in rows:
        by_key[(r["task"], r["preset"], r["size"])][r["seeds"]] = r
    seed_counts = sorted({r["seeds"] for r in rows})
    lines = [
        "# Training throughput",
        "",
        f"Command: `{command}`",
        "",
        f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, {jax.devices()[0].platform.upper()}"
        f" ({len(jax.devices())} device), jax {jax.__version__}; {elapsed / 60:.0f} min in total.",
        "",
        "Agent steps per second of the whole compiled loop in steady state (per seed: one MPPI plan,",
        "one environment step, one buffer write, one update; bmpc/pompc also reanalyze 20 sequences x",
        "3 states every 10 updates). 'per process' counts steps of all seeds together.",
        "",
        "| task | preset | size | "
        + " | ".join(f"{n} seed{'s' if n > 1 else ''}: steps/s (x time of 1)" for n in seed_counts)
        + " |",
        "|---|---|---|" + "---|" * len(seed_counts),
    ]
    for (task, preset, size), per in by_key.items():
        one = per.get(1)
        cells = []
        for n in seed_counts:
            r = per.get(n)
            if r is None:
                cells.append("—")
                continue
            ratio = f" ({r['ms_per_step'] / one['ms_per_step']:.2f}x)" if one else ""
            cells.append(
                f"{r['steps_per_s']:.2f} per seed, {r['seed_steps_per_s']:.2f} per process{ratio}"
            )
        lines.append(f"| {task} | {preset} | {size} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "'(Nx)' is the wall time of one agent step with N seeds relative to one seed (the target is",
        "at most 2x for 4 seeds at the 1m size).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["jax/pendulum", "dmc/cartpole-swingup"])
    parser.add_argument(
        "--presets", nargs="+", default=["pompc", "tdmpc2"], choices=sorted(PRESETS)
    )
    parser.add_argument("--sizes", nargs="+", default=["tiny", "1m", "5m"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument(
        "--timed-steps", type=int, default=20, help="agent steps timed per configuration"
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("docs/results/throughput.md")
    )
    parser.add_argument(
        "--notes", type=pathlib.Path, default=None, help="markdown appended to the table"
    )
    args = parser.parse_args()
    command = "python scripts/benchmark_throughput.py " + " ".join(sys.argv[1:])
    rows, start = [], time.perf_counter()
    for task in args.tasks:
        for preset in args.presets:
            for size in args.sizes:
                for n in args.seeds:
                    r = measure(task, preset, size, n, args.timed_steps)
                    rows.append(r)
                    print(
                        f"{task} {preset} {size} seeds={n}: {r['steps_per_s']:.2f} steps/s per seed,"
                        f" {r['ms_per_step']:.0f} ms/step (first chunk {r['first_chunk_s']:.0f}s)",
                        flush=True,
                    )
                    write_table(rows, args.out, command.strip(), time.perf_counter() - start)
    if args.notes is not None:
        with open(args.out, "a") as f:
            f.write(args.notes.read_text())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
