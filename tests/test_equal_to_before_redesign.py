"""The module redesign changed no numbers: each preset's per-seed metrics over the first chunk
on jax/pendulum equal those recorded before it.

`tests/data/first_chunk_before_redesign.npz` was written by the code before the redesign
(commit ecde4c6) with `first_chunk(small(preset, num_seeds=2, seed=3, **overrides))` for the
variants below, one array `VARIANT/METRIC` of shape (step, seed) per metric.
"""

import pathlib

import numpy as np
import pytest
from test_training import first_chunk, small


BEFORE = pathlib.Path(__file__).parent / "data" / "first_chunk_before_redesign.npz"
VARIANTS = {
    "tdmpc2": ("tdmpc2", {}),
    "bmpc": ("bmpc", {}),
    "pompc": ("pompc", {}),
    "pompc-replay": ("pompc", dict(prior="replay")),
    "pompc-forward": ("pompc", dict(prior_loss="forward")),
    "pompc-auto": ("pompc", dict(lam="auto")),
}


# Diagnostics logged since (they add train.csv columns; none was renamed or dropped).
ADDED = {
    "pi_std",
    "prior_std",
    "prior_mean_gap",
    "plan_std_at_floor",
    "q_estimate",
    "q_realised",
}


@pytest.fixture(scope="module")
def before() -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(BEFORE) as data:
        for name in data.files:
            variant, metric = name.split("/")
            out.setdefault(variant, {})[metric] = data[name]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_first_chunk_metrics_equal_before_the_redesign(variant, before):
    preset, overrides = VARIANTS[variant]
    now = first_chunk(small(preset, num_seeds=2, seed=3, **overrides))
    then = before[variant]
    assert set(then) <= set(now) <= set(then) | ADDED, "logged metrics (train.csv columns) changed"
    updated = np.isfinite(then["world_model_loss"]).sum()
    assert updated > 0, "no update ran in the recorded chunk: the comparison would be empty"
    for name, values in then.items():
        np.testing.assert_allclose(now[name], values, rtol=2e-4, atol=1e-5, err_msg=name)
