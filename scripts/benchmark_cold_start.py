"""Time to the first training step, cold (empty compile cache) and warm (the same command again,
the cache filled by the cold run), per preset and model size.

Each measurement launches `scripts/train.py` on `--task` with a fresh compile-cache directory
(shared by the cold and the warm run of one configuration, so the warm run loads what the cold
one compiled) and records, from the launch: when the run's summary line appears (imports,
environment creation, network init), the chunk compile as the run reports it ("compiled in" /
"loaded from the compile cache in"), and when the first logging window is in train.csv: the
first call, which holds the `--seed-steps` random steps and the pretraining burst, so that is
the first training step. The process is stopped there.

    python scripts/benchmark_cold_start.py --presets tdmpc2 pompc --sizes tiny 5m
"""

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]


def measure(preset: str, size: str, task: str, seed_steps: int, cache: pathlib.Path) -> dict:
    """One launch: seconds to the summary line and to the first train.csv row, and the chunk
    compile as printed."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = pathlib.Path(tmp) / "run"
        cmd = [
            sys.executable, str(ROOT / "scripts" / "train.py"), preset, "--task", task,
            "--model-size", size, "--seed-steps", str(seed_steps), "--steps", str(4 * seed_steps),
            "--chunk-steps", str(seed_steps), "--eval-every", str(4 * seed_steps),
            "--no-aim", "--no-progress", "--compile-cache", str(cache), "--run-dir", str(run_dir),
        ]  # fmt: skip
        launched = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        found: dict = {}

        def read() -> None:
            for line in proc.stdout:
                if line.startswith(f"{preset} on ") and "summary" not in found:
                    found["summary"] = time.monotonic() - launched
                match = re.match(r"chunk of \d+ agent steps: (.*) in ([\d.]+) s", line)
                if match:
                    found["chunk"] = f"{match[1]} in {float(match[2]):.1f} s"

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            while not (run_dir / "train.csv").exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"{' '.join(cmd)} ended with {proc.returncode}")
                time.sleep(0.05)
            found["first_step"] = time.monotonic() - launched
        finally:
            proc.kill()
            proc.wait()
            reader.join(5)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["tdmpc2", "pompc"])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "5m"])
    parser.add_argument("--task", default="jax/pendulum")
    parser.add_argument("--seed-steps", type=int, default=8)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs/results/cold_start.md")
    args = parser.parse_args()
    command = "python scripts/benchmark_cold_start.py " + " ".join(sys.argv[1:])
    lines = [
        f"`{command.strip()}`",
        "",
        f"Task `{args.task}`, one seed, {args.seed_steps} seed steps and as many pretraining"
        " updates in the first call. Seconds from launching `scripts/train.py`.",
        "",
        "| preset | size | run | summary line (imports, env, init) | chunk compile | first training step |",
        "|---|---|---|---|---|---|",
    ]
    for preset in args.presets:
        for size in args.sizes:
            with tempfile.TemporaryDirectory() as cache:
                for kind in ("cold", "warm"):
                    r = measure(preset, size, args.task, args.seed_steps, pathlib.Path(cache))
                    lines.append(
                        f"| {preset} | {size} | {kind} | {r.get('summary', float('nan')):.1f}"
                        f" | {r.get('chunk', '?')} | {r['first_step']:.1f} |"
                    )
                    print(lines[-1], flush=True)
    page = "\n".join(["# Time to the first training step, cold and warm", "", *lines, ""])
    args.out.write_text(page)
    print(page)


if __name__ == "__main__":
    main()
