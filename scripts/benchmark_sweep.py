"""Wall time of a lambda x seed grid: one sweep process vs one process per lambda, run one after
another, including imports, compile and evaluation (what the user waits for); and of one run
over two processes (`--distributed`, on 127.0.0.1) vs the same seeds in one process.

    python scripts/benchmark_throughput.py --sweep          # writes the section into throughput.md
    python scripts/benchmark_sweep.py --lams 0.1 1 9 --num-seeds 3 --steps 300

Every process compiles cold (`--compile-cache none`): with the persistent cache on (the default)
the second and third per-lambda processes would load the program the first one compiled, since
lambda is data of the program. The page also reports the largest difference between a sub-run's
final eval returns and those of the same lambda trained alone: equal at first to float rounding
(tests/test_sweep.py), the runs drift apart over many updates as a seed does alone vs in a batch.
"""

import argparse
import csv
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION_MARK = "<!-- lambda-sweep section: written by scripts/benchmark_sweep.py -->"


def train(args: list[str], processes: int = 1) -> float:
    """Run scripts/train.py with `args` (as one job of `processes` processes on 127.0.0.1);
    its wall time in seconds."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), *args]
    print(" ".join(cmd[1:]), flush=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    if processes == 1:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start
    job = lambda i: {
        **os.environ,
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": str(processes),
        "JAX_PROCESS_ID": str(i),
    }
    procs = [
        subprocess.Popen([*cmd, "--distributed"], env=job(i), stdout=subprocess.DEVNULL)
        for i in range(processes)
    ]
    if any(p.wait() != 0 for p in procs):
        raise RuntimeError("a process of the distributed run failed")
    return time.perf_counter() - start


def returns(run_dir: pathlib.Path) -> list[float]:
    with open(run_dir / "eval.csv") as f:
        return [float(row["return"]) for row in csv.DictReader(f)]


def sweep_section(
    lams: list[str], num_seeds: int, steps: int, task: str, size: str, command: str
) -> str:
    """Time both ways of running the grid; the markdown section with its command."""
    common = [
        "--task", task, "--model-size", size,
        "--steps", str(steps), "--seed-steps", str(steps // 3), "--eval-every", str(steps),
        "--eval-episodes", "2", "--no-progress", "--no-aim", "--compile-cache", "none",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        seeds = ["--num-seeds", str(num_seeds)]
        one = train(["pompc", "--lam", *lams, *common, *seeds, "--run-dir", str(root / "sweep")])
        each = [
            train(["pompc", "--lam", lam, *common, *seeds, "--run-dir", str(root / f"alone-{lam}")])
            for lam in lams
        ]
        total = str(2 * -(-len(lams) * num_seeds // 2))  # the grid's runs, made even
        spread = [*common, "--lam", lams[0], "--num-seeds", total]
        two = train(["pompc", *spread, "--run-dir", str(root / "two")], processes=2)
        single = train(["pompc", *spread, "--run-dir", str(root / "single")])
        diff = max(
            max(
                abs(a - b)
                for a, b in zip(
                    returns(root / "sweep" / f"lam-{float(lam):g}"), returns(root / f"alone-{lam}")
                )
            )
            for lam in lams
        )
    runs = len(lams) * num_seeds
    return "\n".join(
        [
            SECTION_MARK,
            "",
            f"## λ sweep: {len(lams)} λ x {num_seeds} seeds in one program vs one process per λ",
            "",
            f"`{command}`",
            "",
            f"`pompc` on `{task}`, size `{size}`, {steps} agent steps per run ({steps // 3} seed"
            f" steps), {runs} runs, every process compiling cold (`--compile-cache none`); wall"
            " time per process including imports, compile, training and evaluation.",
            "",
            "| how | processes | wall time |",
            "|---|---|---|",
            f"| one sweep (`--lam {' '.join(lams)} --num-seeds {num_seeds}`) | 1 | {one:.0f} s |",
            f"| one process per λ (`--lam X --num-seeds {num_seeds}`), one after another |"
            f" {len(lams)} | {sum(each):.0f} s ({' + '.join(f'{t:.0f}' for t in each)}) |",
            "",
            f"One program takes {one / sum(each):.2f}x the wall time of the separate processes."
            f" Largest difference between a sub-run's final eval return and the same λ alone: {diff:.0f}"
            " (a run inside the sweep equals the same run alone to float tolerance over the first"
            " chunk, tests/test_sweep.py; over hundreds of updates the rounding differences of"
            " another batch shape grow, as for a seed alone vs in a batch).",
            "",
            f"One run of {total} seeds (λ = {lams[0]}, same steps) over two processes on this"
            f" machine (`--distributed`, 127.0.0.1, gloo): {two:.0f} s; in one process: {single:.0f} s"
            " (both processes share this machine's cores: this measures the overhead of the"
            " collectives, not the gain of more hosts).",
            "",
            "On one GPU (a projection, not measured): the tiny model's runs do not fill the"
            " device, so a step of the whole grid should cost about what one λ's seeds do, and the"
            " grid should take about one process's wall time: one compile and one training instead"
            f" of {len(lams)}.",
            "",
        ]
    )


def write_section(page: pathlib.Path, section: str) -> None:
    """Put `section` at the end of `page`, replacing an earlier one."""
    text = page.read_text() if page.exists() else ""
    text = text.split(SECTION_MARK)[0].rstrip("\n")
    page.write_text((text + "\n\n" if text else "") + section)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lams", nargs="+", default=["0.1", "1", "9"])
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--task", default="jax/pendulum")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs/results/throughput.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, command: str | None = None) -> None:
    args = parse_args(argv)
    command = command or "python scripts/benchmark_sweep.py " + " ".join(sys.argv[1:])
    section = sweep_section(
        args.lams, args.num_seeds, args.steps, args.task, args.size, command.strip()
    )
    write_section(args.out, section)
    print(section)


if __name__ == "__main__":
    main()
