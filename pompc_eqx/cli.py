"""Command-line entry point of `scripts/train.py` (tyro over the frozen `TrainConfig`)."""

import sys
import warnings
from collections.abc import Sequence

import tyro

from .checkpoint import CheckpointError
from .config import PRESETS, TrainConfig
from .envs.errors import MissingDependencyError, UnknownTaskError
from .experiment import ConfigError, NonFiniteError, run
from .tracking import CsvLogError


# Errors a user can fix from the command line: one line on stderr, no traceback.
USER_ERRORS = (ConfigError, UnknownTaskError, MissingDependencyError, CheckpointError, CsvLogError)


def parse(args: Sequence[str]) -> TrainConfig:
    """`PRESET [OPTIONS]` -> the preset's `TrainConfig` with the options applied."""
    return tyro.extras.overridable_config_cli(PRESETS, args=list(args), prog="scripts/train.py")


def main(args: Sequence[str]) -> int:
    # Headless machines: GLFW (dm_control's default GL backend) warns when there is no display.
    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
    cfg = parse(args)
    try:
        run_dir = run(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(f"done: {run_dir}")
    return 0
