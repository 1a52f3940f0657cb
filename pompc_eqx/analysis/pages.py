"""Results pages: the command-line options of the scripts that write them, the commit stamp,
and the markdown page itself."""

import argparse
import datetime
import json
import pathlib
import shlex

from pompc_eqx.checkpoint import atomic_write
from pompc_eqx.outputs import git_commit


def script_command(script: str, argv: list[str]) -> str:
    """The command line that ran `scripts/<script>`, quoted so that it can be pasted into a shell."""
    return shlex.join(["python", f"scripts/{script}", *argv])


def add_page_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by the scripts that write results pages."""
    parser.add_argument("--title", default=None)
    parser.add_argument(
        "--train-metrics",
        nargs="*",
        default=[],
        help="also tabulate these train.csv columns (mean over windows and seeds) and plot them"
        " (e.g. kl_mean kl_std: the paper's Fig. 7)",
    )
    parser.add_argument(
        "--every-eval",
        action="store_true",
        help="also tabulate the mean over seeds at every evaluation",
    )
    notes = parser.add_mutually_exclusive_group()
    notes.add_argument("--notes", default="", help="a paragraph for the page")
    notes.add_argument(
        "--notes-file",
        type=pathlib.Path,
        default=None,
        help="markdown notes for the page, from a file",
    )


def page_notes(args: argparse.Namespace) -> str:
    """A page's notes: `--notes TEXT`, or the markdown in `--notes-file` (which keeps long
    notes out of the command line the page shows)."""
    return args.notes_file.read_text().strip() if args.notes_file is not None else args.notes


def run_summary(run_dir: pathlib.Path) -> str:
    """Model size, network widths, planner and length of a run, from its config.json."""
    saved = json.loads((run_dir / "config.json").read_text())
    cfg, agent = saved["config"], saved["agent"]
    return (
        f"model size `{cfg['model_size']}` (latent {agent['model']['latent_dim']}, MLP {agent['model']['mlp_dim']})"
        f" · planner {agent['planner']['num_samples']} samples, {agent['planner']['num_elites']} elites,"
        f" {agent['planner']['iterations']} iterations, horizon {agent['planner']['horizon']}"
        f" · {cfg['steps']} agent steps · {cfg['num_seeds']} seeds vmapped in one process"
    )


def run_commits(run_dir: pathlib.Path) -> str:
    """The commits a run was trained at (its first invocation's, then each resume's, repeats
    dropped), from its config.json."""
    commits = json.loads((run_dir / "config.json").read_text()).get("commits") or [None]
    return ", ".join(dict.fromkeys(f"`{c}`" if c else "not recorded" for c in commits))


def write_page(
    path: pathlib.Path,
    title: str,
    command: str,
    repo: pathlib.Path,
    run_dirs: list[pathlib.Path],
    table: str,
    images: list[str],
    notes: str = "",
    wall_times: dict[str, float] | None = None,
) -> None:
    """A results page: the command, commit, model size, the table, the figures, wall times and
    the commits each run was trained at."""
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        f"Commit `{git_commit(repo, ignore=path.parent)}` · written {datetime.date.today().isoformat()} · {run_summary(run_dirs[0])}.",
        "",
    ]
    if notes:
        lines += [notes, ""]
    lines += [table, *[f"![{pathlib.Path(i).stem}]({i})\n" for i in images]]
    if wall_times:
        lines += [
            "",
            "Wall time of the invocation that last trained each run (one process each, on a"
            " 2-core CPU; a run resumed across invocations took longer in all):",
            "",
            "| run | wall time |",
            "|---|---|",
        ]
        lines += [f"| {name} | {seconds / 60:.1f} min |" for name, seconds in wall_times.items()]
    lines += ["", "Commits each run was trained at (first invocation, then resumes):", ""]
    lines += [f"- {d.name}: {run_commits(d)}" for d in run_dirs]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")
