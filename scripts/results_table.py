"""Paper-style results from existing run directories: a Table-1-style markdown table of final
returns (mean ± 95% CI over seeds) and learning-curve plots: every seed's line and their mean,
plus the mean's 95% CI (clipped to the values observed) when there are 3 or more seeds.

    python scripts/results_table.py runs/pendulum/*/ --task jax/pendulum
    python scripts/results_table.py RUN_A RUN_B --plot curves.png --train-metrics kl_mean kl_std
    python scripts/results_table.py SWEEP_DIR    # a lambda sweep: one row per value
"""

import argparse
import os
import pathlib
import sys

from pompc_eqx.analysis.curves import eval_curves, expand_sweeps, read_config, train_curves
from pompc_eqx.analysis.pages import add_page_arguments, page_notes, script_command, write_page
from pompc_eqx.analysis.plots import plot_curves
from pompc_eqx.analysis.tables import page_tables


ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=pathlib.Path,
        help="run (or sweep) directories written by scripts/train.py",
    )
    parser.add_argument("--task", default=None, help="column title (default: the runs' task)")
    parser.add_argument(
        "--plot", type=pathlib.Path, default=None, help="write the evaluation curves here (PNG)"
    )
    parser.add_argument(
        "--page", type=pathlib.Path, default=None, help="also write a results page (markdown) here"
    )
    add_page_arguments(parser)
    args = parser.parse_args()
    command = script_command("results_table.py", sys.argv[1:])
    args.run_dirs = expand_sweeps(args.run_dirs)
    curves = [c for d in args.run_dirs for c in eval_curves(d)]
    task = args.task or read_config(args.run_dirs[0])["task"]
    table = page_tables(curves, args.run_dirs, task, args)
    print(table, end="")
    images = []
    if args.plot is not None:
        plot_curves(curves, args.plot, args.title or task)
        images.append(args.plot)
        for metric in args.train_metrics:
            path = args.plot.with_name(f"{args.plot.stem}-{metric}.png")
            plot_curves(
                train_curves(args.run_dirs, metric), path, f"{args.title or task}: {metric}", metric
            )
            images.append(path)
        print("wrote " + ", ".join(map(str, images)))
    if args.page is not None:
        relative = [os.path.relpath(i, args.page.parent) for i in images]
        write_page(
            args.page,
            args.title or task,
            command,
            ROOT,
            args.run_dirs,
            table,
            relative,
            page_notes(args),
        )
        print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
