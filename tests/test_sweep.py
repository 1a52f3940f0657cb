"""lambda sweeps: every finite lambda > 0 and every seed in one compiled program."""

import csv
import dataclasses
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
from test_training import CHUNK, first_chunk, small

from pompc_eqx.cli import parse
from pompc_eqx.config import ConfigError
from pompc_eqx.experiment import Trainer, run
from pompc_eqx.sweep import Sweep, split_sweep_args


def _read(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_command_line_makes_a_sweep_of_the_values():
    sweep = parse(["pompc", "--lam", "0.1", "1", "9", "--num-seeds", "3"])
    assert isinstance(sweep, Sweep)
    assert sweep.values == (0.1, 1.0, 9.0) and sweep.option == "--lam"
    assert sweep.base.lam == 0.1 and sweep.base.num_seeds == 3
    assert sweep.names == ["lam-0.1", "lam-1", "lam-9"]
    assert parse(["pompc", "--lam", "2"]).lam == 2.0  # one value: a plain run
    auto = parse(["pompc", "--lam", "auto", "--loss.kl-target", "0.5", "2"])
    assert auto.option == "--loss.kl-target" and auto.base.loss.kl_target == 0.5
    assert auto.names == ["kl-target-0.5", "kl-target-2"]
    member = auto.member(1, root=pathlib.Path("sweep"))
    assert member.loss.kl_target == 2.0 and member.lam == "auto"
    assert member.run_dir == pathlib.Path("sweep/kl-target-2")


@pytest.mark.parametrize(
    "args, message",
    [
        (["pompc", "--lam", "0", "1", "inf"], r"lambda = 0, inf is another program"),
        (["tdmpc2", "--lam", "1", "1"], "at least two different values"),
        (["pompc", "--lam", "auto", "1"], "cannot be mixed"),
        (["pompc", "--loss.kl-target", "0.1", "1"], "need --lam auto"),
        (["pompc", "--lam", "1", "2", "--prior", "learned", "replay"], "prior learned replay"),
    ],
)
def test_sweeps_that_cannot_share_a_program_are_refused(args, message):
    with pytest.raises(ConfigError, match=message):
        parse(args)


def test_split_sweep_args_keeps_other_options():
    args = ["pompc", "--lam", "0.1", "-1", "--steps", "5"]
    assert split_sweep_args(args) == (["pompc", "--steps", "5"], "--lam", ["0.1", "-1"])


@pytest.mark.slow
def test_a_run_inside_a_sweep_equals_the_same_run_alone():
    """Run r of the sweep is seed r % num_seeds of value r // num_seeds, with that seed's key:
    lambda = 1 inside --lam 0.1 1 9 gives the metrics of lambda = 1 alone."""
    base = small(num_seeds=2, lam=0.1)
    swept = Trainer(base, sweep=Sweep(base, "--lam", (0.1, 1.0, 9.0)))
    _, metrics, _ = swept.chunk_fn(CHUNK)(swept.init_state())
    metrics = jax.device_get(metrics)
    alone = first_chunk(small(num_seeds=2, lam=1.0))
    assert np.isfinite(alone["pi_loss"]).sum() > 0, "no policy update ran in the first chunk"
    for name, values in alone.items():
        np.testing.assert_allclose(
            values, metrics[name][:, 2:4], rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=name
        )
    updated = np.isfinite(metrics["lam"][:, 0])
    assert np.allclose(metrics["lam"][updated], np.repeat([0.1, 1.0, 9.0], 2), rtol=1e-6)
    # lambda is not ignored: the same seed's policy loss differs between the values.
    diff = np.abs(metrics["pi_loss"][:, 0] - metrics["pi_loss"][:, 4])
    assert np.nanmax(diff) > 1e-3


@pytest.mark.slow
def test_sweep_directory_keeps_the_run_contract_and_resumes_bit_identically(tmp_path):
    base = small(num_seeds=2, lam=0.5, checkpoint_every=CHUNK, run_dir=tmp_path / "full")
    sweep = Sweep(base, "--lam", (0.5, 2.0))
    full = run(sweep)
    single = run(small(num_seeds=2, steps=CHUNK, run_dir=tmp_path / "single"))
    manifest = json.loads((full / "sweep.json").read_text())
    assert manifest["runs"] == ["lam-0.5", "lam-2"] and manifest["values"] == [0.5, 2.0]
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == [
        f"step_{CHUNK:012d}.ckpt",
        f"step_{2 * CHUNK:012d}.ckpt",
    ]
    for name, lam in (("lam-0.5", 0.5), ("lam-2", 2.0)):
        sub = full / name
        saved = json.loads((sub / "config.json").read_text())
        assert saved["config"]["lam"] == lam and saved["agent"]["lam"] == lam
        assert saved["seeds"] == [0, 1]
        for table in ("eval.csv", "train.csv"):
            rows, alone = _read(sub / table), _read(single / table)
            assert list(rows[0]) == list(alone[0]), f"{table} columns differ from a single run's"
        assert [r["seed"] for r in _read(sub / "eval.csv")] == ["0", "1"] * 2
        assert not (sub / "checkpoints").exists()
    lam_column = {float(r["lam"]) for r in _read(full / "lam-2" / "train.csv") if r["lam"]}
    assert lam_column == {2.0}
    # Interrupted copy: only the first checkpoint survives.
    part = tmp_path / "part"
    shutil.copytree(full, part)
    (part / "checkpoints" / f"step_{2 * CHUNK:012d}.ckpt").unlink()
    resumed = parse(["--resume", str(part), "--no-progress"])
    assert isinstance(resumed, Sweep) and resumed.values == (0.5, 2.0)
    run(dataclasses.replace(resumed, base=dataclasses.replace(resumed.base, aim=False)))
    for name in manifest["runs"]:
        assert _read(part / name / "eval.csv") == _read(full / name / "eval.csv")
        assert (
            _read(part / name / "train.csv")[-1].keys()
            == _read(full / name / "train.csv")[-1].keys()
        )
    with pytest.raises(Exception, match="one run of the sweep"):
        run(dataclasses.replace(base, run_dir=None, resume=part / "lam-2"))


def test_sweep_memory_check_counts_every_run():
    base = small(num_seeds=2, lam=1.0)
    budget = dataclasses.replace(base.buffer, capacity=100_000, memory_budget_gb=0.01)
    base = dataclasses.replace(base, buffer=budget)
    with pytest.raises(ConfigError, match="for 6 runs"):
        Trainer(base, sweep=Sweep(base, "--lam", (1.0, 2.0, 3.0)))
