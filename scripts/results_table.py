"""Paper-style results from existing run directories: a Table-1-style markdown table of final
returns (mean ± 95% CI over seeds) and learning-curve plots.

    python scripts/results_table.py runs/pendulum/*/ --task jax/pendulum
    python scripts/results_table.py RUN_A RUN_B --plot curves.png --train-metrics kl_mean kl_std
"""

import argparse
import os
import pathlib
import sys

from pompc_eqx.results import (
    eval_curve,
    final_table,
    page_notes,
    plot_curves,
    read_config,
    script_command,
    train_metric_table,
    train_curves,
    write_page,
)


ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=pathlib.Path, help="run directories written by scripts/train.py")
    parser.add_argument("--task", default=None, help="column title (default: the runs' task)")
    parser.add_argument("--plot", type=pathlib.Path, default=None, help="write the evaluation curves here (PNG)")
    parser.add_argument(
        "--train-metrics", nargs="*", default=[],
        help="also tabulate these train.csv columns (mean over windows and seeds) and, with --plot,"
        " plot them next to it (e.g. kl_mean kl_std: the paper's Fig. 7)",
    )
    parser.add_argument("--title", default=None)
    parser.add_argument("--page", type=pathlib.Path, default=None, help="also write a results page (markdown) here")
    notes_group = parser.add_mutually_exclusive_group()
    notes_group.add_argument("--notes", default="", help="a paragraph for the page")
    notes_group.add_argument("--notes-file", type=pathlib.Path, default=None, help="markdown notes for the page, from a file")
    args = parser.parse_args()
    notes = page_notes(args.notes, args.notes_file)
    command = script_command("results_table.py", sys.argv[1:])
    curves = [eval_curve(d) for d in args.run_dirs]
    task = args.task or read_config(args.run_dirs[0])["task"]
    table = final_table(curves, task)
    if args.train_metrics:
        table += "\n" + train_metric_table(args.run_dirs, args.train_metrics)
    print(table, end="")
    images = []
    if args.plot is not None:
        plot_curves(curves, args.plot, args.title or task)
        images.append(args.plot)
        for metric in args.train_metrics:
            path = args.plot.with_name(f"{args.plot.stem}-{metric}.png")
            plot_curves(train_curves(args.run_dirs, metric), path, f"{args.title or task}: {metric}", metric)
            images.append(path)
        print("wrote " + ", ".join(map(str, images)))
    if args.page is not None:
        relative = [os.path.relpath(i, args.page.parent) for i in images]
        write_page(args.page, args.title or task, command, ROOT, args.run_dirs, table, relative, notes)
        print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
