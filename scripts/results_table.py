"""Paper-style results from existing run directories: a Table-1-style markdown table of final
returns (mean ± 95% CI over seeds) and learning-curve plots.

    python scripts/results_table.py runs/pendulum/*/ --task jax/pendulum
    python scripts/results_table.py RUN_A RUN_B --plot curves.png --train-metrics kl_mean kl_std
"""

import argparse
import pathlib

from pompc_eqx.results import eval_curve, final_table, plot_curves, read_config, train_curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=pathlib.Path, help="run directories written by scripts/train.py")
    parser.add_argument("--task", default=None, help="column title (default: the runs' task)")
    parser.add_argument("--plot", type=pathlib.Path, default=None, help="write the evaluation curves here (PNG)")
    parser.add_argument(
        "--train-metrics", nargs="*", default=[],
        help="also plot these train.csv columns (e.g. kl_mean kl_std: the paper's Fig. 7), next to --plot",
    )
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    curves = [eval_curve(d) for d in args.run_dirs]
    task = args.task or read_config(args.run_dirs[0])["task"]
    print(final_table(curves, task), end="")
    if args.plot is not None:
        plot_curves(curves, args.plot, args.title or task)
        print(f"wrote {args.plot}")
        for metric in args.train_metrics:
            path = args.plot.with_name(f"{args.plot.stem}-{metric}.png")
            plot_curves([train_curve(d, metric) for d in args.run_dirs], path, f"{args.title or task}: {metric}", metric)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
