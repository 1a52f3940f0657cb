"""Command-line entry point of `scripts/train.py` (tyro over the frozen `TrainConfig`).

`PRESET [OPTIONS]` starts a run (a sweep with `--lam A B ...`); `--resume RUN_DIR [OPTIONS]`
(no preset) continues one with its saved configuration. Two options are handled here, before tyro: `--compile-cache DIR|none`
and `--overwrite` (once: start over in a directory whose run has no checkpoint yet; twice: also
delete a run that has checkpoints).
"""

import argparse
import json
import os
import pathlib
import sys
import warnings
from collections.abc import Sequence

import tyro

from . import distributed
from .checkpoint import CheckpointError
from .compiling import tasks_in_flight, use_compile_cache
from .config import ConfigError, TrainConfig, config_from_dict
from .envs.errors import MissingDependencyError, UnknownTaskError
from .experiment import NonFiniteError, run
from .files import DiskError
from .presets import PRESETS
from .signals import Interrupted
from .sweep import SWEEP_FILE, Sweep, parse_values, split_sweep_args
from .tracking import CsvLogError


# Errors a user can fix from the command line: one line on stderr, no traceback.
USER_ERRORS = (
    ConfigError,
    UnknownTaskError,
    MissingDependencyError,
    CheckpointError,
    CsvLogError,
    DiskError,
)
_EXTRA_HELP = """
options of scripts/train.py itself:
  --resume RUN_DIR [OPTIONS]  (without PRESET) continue RUN_DIR with its saved configuration;
                              only --steps, --eval-every, --eval-episodes, --checkpoint-every,
                              --chunk-steps, --no-aim/--aim, --no-progress may change
  --compile-cache DIR|none    persistent XLA compile cache (default: $JAX_COMPILATION_CACHE_DIR,
                              else $XDG_CACHE_HOME/pompc-eqx/xla or ~/.cache/pompc-eqx/xla)
  --lam A B C ...             a lambda sweep: every finite lambda > 0 and every seed in one
                              program, one sub-run directory per value (lam-A/, ...); with
                              --lam auto, --loss.kl-target A B ... sweeps the KL target
  --distributed               one run over several processes or hosts: start the same command
                              in each after setting JAX_COORDINATOR_ADDRESS (host:port of
                              process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID (SLURM: detected);
                              the runs (seeds x values) are sharded over every process's devices
  --overwrite                 start over in a --run-dir whose run has no checkpoint yet
                              (give it twice to delete a run that has checkpoints)
exit codes: 0 done, 2 bad input, 3 non-finite values, 130/143/138 stopped by
SIGINT/SIGTERM/SIGUSR1 after a checkpoint (continue with --resume RUN_DIR)
"""


def _own_options(args: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--compile-cache", default=None)
    parser.add_argument("--overwrite", action="count", default=0)
    parser.add_argument("--distributed", action="store_true")
    return parser.parse_known_args(list(args))


def _saved_config(run_dir: pathlib.Path) -> TrainConfig:
    config_file = run_dir / "config.json"
    if not config_file.exists():
        raise CheckpointError(
            f"{run_dir} has no config.json: --resume expects a run directory written by "
            "scripts/train.py"
        )
    return config_from_dict(json.loads(config_file.read_text())["config"])


def _resume_dir(args: list[str]) -> pathlib.Path | None:
    for i, arg in enumerate(args):
        if arg.startswith("--resume="):
            return pathlib.Path(arg.split("=", 1)[1])
        if arg == "--resume" and i + 1 < len(args):
            return pathlib.Path(args[i + 1])
    return None


def parse(args: Sequence[str]) -> TrainConfig | Sweep:
    """`PRESET [OPTIONS]` -> the preset's `TrainConfig` with the options applied (a `Sweep` if
    `--lam` or `--loss.kl-target` has several values); `--resume DIR [OPTIONS]` -> the saved
    configuration (or sweep) of DIR with the options applied.
    """
    args = list(args)
    resume = _resume_dir(args)
    if resume is not None and args[0] not in PRESETS:
        if (resume / SWEEP_FILE).exists():
            saved = json.loads((resume / SWEEP_FILE).read_text())
            default = config_from_dict(saved["config"])
            base = tyro.cli(TrainConfig, default=default, args=args, prog="scripts/train.py")
            return Sweep(base, saved["option"], tuple(saved["values"]))
        saved = _saved_config(resume)
        return tyro.cli(TrainConfig, default=saved, args=args, prog="scripts/train.py")
    args, option, raw = split_sweep_args(args)
    if option is None:
        return tyro.extras.overridable_config_cli(PRESETS, args=args, prog="scripts/train.py")
    values = parse_values(option, raw)
    # The sweep's base is the configuration of its first value.
    args = [*args, option, raw[0]]
    base = tyro.extras.overridable_config_cli(PRESETS, args=args, prog="scripts/train.py")
    return Sweep(base, option, values)


def main(args: Sequence[str]) -> int:
    # Headless machines: GLFW (dm_control's default GL backend) warns when there is no display.
    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
    own, args = _own_options(args)
    if own.distributed:
        distributed.initialize()  # before anything else uses JAX
    try:
        try:
            cfg = parse(args)
        except SystemExit:
            if "--help" in args or "-h" in args:
                print(_EXTRA_HELP)
            raise
        use_compile_cache(own.compile_cache)
        run(cfg, overwrite=own.overwrite, command=["scripts/train.py", *args])
        code = 0
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 3
    except Interrupted as err:
        print(err, file=sys.stderr)
        code = err.exit_code
    if tasks_in_flight():
        # An abandoned compile or call must not delay (or crash) the interpreter's shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
