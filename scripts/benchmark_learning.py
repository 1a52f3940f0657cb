"""Run a grid of variants on one task and write its results page.

Each variant is one `scripts/train.py` process training `--num-seeds` vmapped seeds. The page
(`OUT/README.md`) names the command, the commit, the model size and each variant's wall time,
and holds a Table-1-style table (final mean ± 95% CI over seeds) and learning curves against env
steps, agent steps on the top axis: every seed's line and their mean, plus the mean's 95% CI
(clipped to the returns observed) when there are 3 or more seeds. Every run's `eval.csv`
(and `eval_policy.csv`: a second curve, the policy alone), `train.csv` and `config.json` are
copied next to it; checkpoints stay in `--runs-dir`.

    python scripts/benchmark_learning.py --task jax/pendulum --out docs/results/pendulum \\
        --variants tdmpc2 bmpc pompc:lam=0.1 pompc:lam=1:prior-loss=forward \\
        -- --model-size tiny --steps 10000 --eval-every 2000

    # the same grid, written with the expansion flags:
    python scripts/benchmark_learning.py --task jax/pendulum --out docs/results/pendulum \\
        --variants tdmpc2 bmpc --lams 0.1 1 9 --prior-losses reverse forward -- --model-size tiny

    # the --lams of each prior as ONE train.py process (a lambda sweep, one compiled program):
    python scripts/benchmark_learning.py --task jax/pendulum --out docs/results/lam-grid \\
        --lams 0.1 1 9 --sweep -- --model-size tiny --steps 10000

A variant is `PRESET[:option=value...]`, options being train.py flags without the dashes.
Re-running the same command skips finished variants and resumes interrupted ones. With
`--page-only` it trains nothing and rewrites the page from the run files already copied to
`OUT/runs` (after a fresh clone, or once a run's checkpoints are gone).
"""

import argparse
import pathlib
import shutil
import subprocess
import sys
import time

from pompc_eqx.analysis.curves import eval_curves, train_curves
from pompc_eqx.analysis.pages import add_page_arguments, page_notes, script_command, write_page
from pompc_eqx.analysis.plots import plot_curves
from pompc_eqx.analysis.tables import page_tables
from pompc_eqx.checkpoint import latest_checkpoint, read_metadata


ROOT = pathlib.Path(__file__).resolve().parents[1]


def variant_args(spec: str) -> tuple[str, list[str]]:
    """`pompc:lam=1:prior-loss=forward` -> (`pompc-lam1-prior-lossforward`, train.py args)."""
    preset, *options = spec.split(":")
    args = [preset]
    for option in options:
        key, _, value = option.partition("=")
        args += [f"--{key}", value] if value else [f"--{key}"]
    name = "-".join([preset] + [o.replace("=", "").replace(".", "p") for o in options])
    return name, args


def expand(args: argparse.Namespace) -> list[str]:
    specs = list(args.variants)
    for lam in args.lams:
        for prior in args.priors:
            losses = args.prior_losses if prior == "learned" else ["reverse"]
            for loss in losses:
                specs.append(f"pompc:lam={lam}:prior={prior}:prior-loss={loss}")
    return specs


def sweeps(args: argparse.Namespace) -> list[tuple[str, list[str], list[str]]]:
    """With `--sweep`: (directory name, train.py args, member specs) per prior and prior loss,
    whose `--lams` train as one sweep; the members' runs keep their one-variant names."""
    if not args.sweep or len(args.lams) < 2:
        return []
    groups = []
    for prior in args.priors:
        for loss in args.prior_losses if prior == "learned" else ["reverse"]:
            options = ["--prior", prior, "--prior-loss", loss]
            members = [f"pompc:lam={lam}:prior={prior}:prior-loss={loss}" for lam in args.lams]
            groups.append(
                (
                    f"pompc-sweep-prior{prior}-prior-loss{loss}",
                    ["pompc", "--lam", *args.lams, *options],
                    members,
                )
            )
    return groups


def finished_step(run_dir: pathlib.Path) -> int:
    path = (
        latest_checkpoint(run_dir / "checkpoints") if (run_dir / "checkpoints").exists() else None
    )
    return -1 if path is None else int(read_metadata(path)["step"])


def without_page_only(argv: list[str]) -> list[str]:
    cut = argv.index("--") if "--" in argv else len(argv)
    return [a for a in argv[:cut] if a != "--page-only"] + argv[cut:]


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        required=True,
        help="results page directory (e.g. docs/results/pendulum)",
    )
    parser.add_argument(
        "--runs-dir",
        type=pathlib.Path,
        default=None,
        help="where runs live (default: runs/grids/<out name>)",
    )
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=[], help="PRESET[:option=value...] specs")
    parser.add_argument(
        "--lams", nargs="*", default=[], help="add pompc variants with these lambdas"
    )
    parser.add_argument("--priors", nargs="*", default=["learned"], choices=["learned", "replay"])
    parser.add_argument(
        "--prior-losses", nargs="*", default=["reverse"], choices=["reverse", "forward"]
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="train the --lams of each prior as one process (a lambda sweep)",
    )
    parser.add_argument(
        "--page-only",
        action="store_true",
        help="train nothing: rewrite OUT/README.md and its plots from the run files in OUT/runs",
    )
    add_page_arguments(parser)
    args = parser.parse_args(ours)
    specs = expand(args)
    if not specs:
        parser.error("no variants: give --variants and/or --lams")
    if args.page_only:
        missing = [
            n
            for n in (variant_args(s)[0] for s in specs)
            if not (args.out / "runs" / n / "eval.csv").exists()
        ]
        if missing:
            parser.error(
                f"--page-only: no {args.out / 'runs'}/<variant>/eval.csv for {', '.join(missing)};"
                " run the command without --page-only to train them"
            )
        # The page names the command that trains its runs, which this one reproduces.
        write_results(args, specs, script_command("benchmark_learning.py", without_page_only(argv)))
        return
    runs_dir = args.runs_dir or ROOT / "runs" / "grids" / args.out.name
    command = script_command("benchmark_learning.py", argv)
    # (name, train.py args, [(member name, its run directory)]): a variant or a sweep of them.
    jobs = []
    swept = set()
    for name, train_args, members in sweeps(args):
        names = [variant_args(m)[0] for m in members]
        subdirs = [f"lam-{float(lam):g}" for lam in args.lams]
        jobs.append((name, train_args, [(n, runs_dir / name / d) for n, d in zip(names, subdirs)]))
        swept.update(members)
    for spec in specs:
        if spec not in swept:
            name, train_args = variant_args(spec)
            jobs.append((name, train_args, [(name, runs_dir / name)]))
    timings = {}
    for name, train_args, members in jobs:
        run_dir = runs_dir / name
        manifest = "sweep.json" if len(members) > 1 else "config.json"
        cmd = [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            *train_args,
            "--task",
            args.task,
            "--num-seeds",
            str(args.num_seeds),
            "--seed",
            str(args.seed),
            "--no-progress",
            *extra,
        ]
        steps = int(extra[extra.index("--steps") + 1]) if "--steps" in extra else None
        done = finished_step(run_dir)
        if steps is not None and done >= steps:
            print(f"[{name}] already finished ({done} agent steps)", flush=True)
        else:
            cmd += (
                ["--resume", str(run_dir)]
                if (run_dir / manifest).exists()
                else ["--run-dir", str(run_dir)]
            )
            print(f"[{name}] {' '.join(cmd[1:])}", flush=True)
            tick = time.perf_counter()
            subprocess.run(cmd, check=True)
            timings[name] = time.perf_counter() - tick
        for member, member_dir in members:
            page_run = args.out / "runs" / member
            page_run.mkdir(parents=True, exist_ok=True)
            for file in ("eval.csv", "train.csv"):
                shutil.copy2(member_dir / file, page_run / file)
            if (member_dir / "eval_policy.csv").exists():  # runs with --eval-policy
                shutil.copy2(member_dir / "eval_policy.csv", page_run / "eval_policy.csv")
            # Paths inside the page are relative to the repository, not to this machine.
            config = (member_dir / "config.json").read_text().replace(f"{ROOT}/", "")
            (page_run / "config.json").write_text(config)
            wall = timings.get(name)
            if wall is not None:  # the members of a sweep share its process's wall time
                (page_run / "wall_time_s.txt").write_text(f"{wall:.0f}\n")
    write_results(args, specs, command)


def write_results(args: argparse.Namespace, specs: list[str], command: str) -> None:
    names = [variant_args(s)[0] for s in specs]
    page_runs = [args.out / "runs" / n for n in names]
    curves = [c for d in page_runs for c in eval_curves(d)]
    title = args.title or f"{args.task}: {len(specs)} variants x {args.num_seeds} seeds"
    plot_curves(curves, args.out / "curves.png", title)
    images = ["curves.png"]
    for metric in args.train_metrics:
        plot_curves(
            train_curves(page_runs, metric),
            args.out / f"{metric}.png",
            f"{args.task}: {metric}",
            metric,
        )
        images.append(f"{metric}.png")
    walls = {
        n: float((d / "wall_time_s.txt").read_text())
        for n, d in zip(names, page_runs)
        if (d / "wall_time_s.txt").exists()
    }
    notes = page_notes(args)
    notes += (
        "\n\n" if notes else ""
    ) + "Per-run `eval.csv` (and `eval_policy.csv`), `train.csv` and `config.json` are in `runs/`."
    if args.sweep:
        notes += (
            " The lambdas of each prior trained as one sweep (one process, one compiled"
            " program): their wall time is that process's, shared."
        )
    table = page_tables(curves, page_runs, args.task, args)
    write_page(args.out / "README.md", title, command, ROOT, page_runs, table, images, notes, walls)
    print(f"wrote {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
