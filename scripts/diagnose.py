"""Look for learning collapse in a run: plot per seed over training the evaluation returns of
every episode, the share of failed episodes, the planner's σ₀ and its share at the std floor,
policy and prior std, the KL terms, Q estimates next to realised returns, gradient norms and
the running scales; flag drops, failures after solving and diverging Q.

    python scripts/diagnose.py RUN_DIR                      # writes RUN_DIR/diagnosis.{md,png}
    python scripts/diagnose.py RUN_DIR --solved-return 750  # "solved" from a task's bar

The rules are in `pompc_eqx/analysis/diagnose.py`.
"""

import argparse
import pathlib
import sys

from pompc_eqx.analysis.curves import read_rows
from pompc_eqx.analysis.diagnose import (
    diagnosis_markdown,
    find_collapses,
    progress_scale,
    read_evaluations,
    solved_from,
)
from pompc_eqx.analysis.diagnose_plots import diagnosis_figure, missing_columns
from pompc_eqx.checkpoint import atomic_write


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=pathlib.Path, help="a run directory of scripts/train.py")
    parser.add_argument(
        "--solved-return",
        type=float,
        default=None,
        help="mean return from which a seed counts as solved (default: within 10%% of the"
        " run's progress of its best mean)",
    )
    args = parser.parse_args()
    run_dir = args.run_dir
    if not (run_dir / "eval.csv").exists():
        print(
            f"error: {run_dir} has no eval.csv (give a run directory of scripts/train.py)",
            file=sys.stderr,
        )
        return 2
    try:
        evaluations = read_evaluations(run_dir)
    except ValueError as err:
        print(f"error: {err}; diagnose after the first evaluation", file=sys.stderr)
        return 2
    train_rows = read_rows(run_dir / "train.csv") if (run_dir / "train.csv").exists() else []
    flags = find_collapses(evaluations, train_rows, args.solved_return)
    scale = progress_scale(evaluations)
    solved_at = solved_from(evaluations, args.solved_return)
    missing = missing_columns(train_rows)
    figure = diagnosis_figure(evaluations, train_rows, flags, scale, f"diagnosis of {run_dir}")
    with atomic_write(run_dir / "diagnosis.png", "wb") as f:
        figure.savefig(f, format="png", dpi=100)
    report = diagnosis_markdown(run_dir, flags, scale, solved_at, missing, "diagnosis.png")
    with atomic_write(run_dir / "diagnosis.md", "w") as f:
        f.write(report)
    print(report, end="")
    print(f"wrote {run_dir / 'diagnosis.md'} and {run_dir / 'diagnosis.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
