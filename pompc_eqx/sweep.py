"""A lambda sweep: runs of one configuration that differ only in lambda (with `--lam auto`, in
the KL target), trained as ONE compiled program whose batch axis is (value, seed).

lambda is data of the KL-regularised objective (`lam.AbstractLambda.swept`), so every finite
lambda > 0 shares the program. lambda = 0 (TD-MPC2's objective) and lambda = inf (BMPC's) are
other programs, so they cannot join a sweep.

On disk a sweep directory holds `sweep.json`, one `checkpoints/` for the whole program, and one
sub-run directory per value (`lam-0.1/`, or `kl-target-0.5/`) with exactly the files of a
single run (`config.json` with its own lambda, `eval.csv`, `train.csv`, Aim).
"""

import dataclasses
import math
import pathlib

from .config import ConfigError, TrainConfig


SWEEP_FILE = "sweep.json"
SWEPT_OPTIONS = ("--lam", "--loss.kl-target")
"""Options that take several values on the command line (`--loss.kl-target` with `--lam auto`)."""
STRUCTURAL_OPTIONS = ("--prior", "--prior-loss")
"""Options whose values are different programs: several values are refused with a reason."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One program over `values` of `option` x `base.num_seeds` seeds.

    `base` is the configuration of the first value, with the sweep directory as its `run_dir`
    (and `resume`); run r of the batch is value r // num_seeds with seed base.seed + r % num_seeds,
    drawn from the same key as that seed alone.
    """

    base: TrainConfig
    option: str
    values: tuple[float, ...]

    def __post_init__(self):
        check_sweep(self.base, self.option, self.values)

    @property
    def names(self) -> list[str]:
        """The sub-run directory of each value: `lam-0.1`, `kl-target-0.5`."""
        prefix = self.option.removeprefix("--").removeprefix("loss.")
        return [f"{prefix}-{v:g}" for v in self.values]

    @property
    def labels(self) -> list[str]:
        """`lam=0.1`: how each value is shown next to its seeds."""
        key = self.option.removeprefix("--").removeprefix("loss.")
        return [f"{key}={v:g}" for v in self.values]

    def member(self, i: int, root: pathlib.Path) -> TrainConfig:
        """The configuration of value i alone, as its sub-run's config.json records it."""
        value, run_dir = self.values[i], root / self.names[i]
        if self.option == "--lam":
            return dataclasses.replace(self.base, lam=value, run_dir=run_dir)
        loss = dataclasses.replace(self.base.loss, kl_target=value)
        return dataclasses.replace(self.base, loss=loss, run_dir=run_dir)

    def manifest(self) -> dict:
        """What sweep.json records besides the command (see `experiment.run`)."""
        return {"option": self.option, "values": list(self.values), "runs": self.names}


def check_sweep(base: TrainConfig, option: str, values: tuple[float, ...]) -> None:
    """Raise `ConfigError` (one line) unless the values can share one compiled program."""
    shown = f"{option} {' '.join(f'{v:g}' for v in values)}"
    if option not in SWEPT_OPTIONS:
        raise ConfigError(f"only {' and '.join(SWEPT_OPTIONS)} can be swept, not {option}")
    if len(set(values)) != len(values) or len(values) < 2:
        raise ConfigError(f"{shown}: a sweep needs at least two different values")
    if option == "--loss.kl-target":
        if base.lam != "auto":
            raise ConfigError(f"{shown}: several KL targets need --lam auto (they tune lambda)")
        if not all(v > 0 for v in values):
            raise ConfigError(f"{shown}: every KL target must be > 0")
        return
    other = [f"{v:g}" for v in values if not (v > 0 and math.isfinite(v))]
    if other:
        raise ConfigError(
            f"{shown}: lambda = {', '.join(other)} is another program (0: TD-MPC2's max-Q "
            "objective, inf: BMPC's KL-only objective); only finite lambda > 0 share one, so "
            "run the others as their own commands"
        )


def split_sweep_args(args: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Take a multi-valued `--lam A B ...` (or `--loss.kl-target A B ...`) out of `args`.

    **Returns:** `(other args, option or None, its values as given)`; a single value stays in
    the arguments for tyro.
    """
    found = None
    for i, arg in enumerate(args):
        if arg not in SWEPT_OPTIONS + STRUCTURAL_OPTIONS:
            continue
        end = i + 1
        while end < len(args) and not args[end].startswith("--"):
            end += 1
        values = args[i + 1 : end]
        if len(values) > 1 and arg in STRUCTURAL_OPTIONS:
            raise ConfigError(
                f"{arg} {' '.join(values)}: each {arg.removeprefix('--')} is another program "
                "(other modules in the objective), so only --lam (or --loss.kl-target) can be "
                "swept in one; run one command per value"
            )
        if len(values) > 1 and found is None:
            found = args[:i] + args[end:], arg, values
    return found or (args, None, [])


def parse_values(option: str, raw: list[str]) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in raw)
    except ValueError:
        raise ConfigError(
            f"{option} {' '.join(raw)}: a sweep takes numbers (--lam auto cannot be mixed with "
            "values; sweep its --loss.kl-target instead)"
        ) from None
