"""The analysis tools stay out of the training package, and their plots show only what the
seeds did: per-seed lines, a 95% interval only with 3 or more seeds, clipped to observed values."""

import subprocess
import sys

import numpy as np
import pytest

from pompc_eqx.analysis.curves import Curve
from pompc_eqx.analysis.plots import curves_figure


def test_importing_the_package_imports_neither_matplotlib_nor_the_analysis_tools():
    code = (
        "import sys, pompc_eqx, pompc_eqx.experiment, pompc_eqx.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'pompc_eqx.analysis'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def _curve(values: list[list[float]], observed: tuple[float, float]) -> Curve:
    values = np.array(values)
    steps = np.arange(1, values.shape[1] + 1) * 1000
    return Curve("pompc", steps, 2 * steps, tuple(range(len(values))), values, observed)


def _artists(ax, gid):
    return [a for a in [*ax.lines, *ax.collections] if a.get_gid() == gid]


def test_two_seeds_show_each_seed_and_their_mean_without_an_interval():
    # The bug this guards against: a t-interval over 2 seeds reached +800 on the pendulum,
    # whose returns cannot exceed 0.
    curve = _curve([[-1200.0, -900.0, -300.0], [-1100.0, -200.0, -150.0]], (-1400.0, -100.0))
    ax = curves_figure([curve], "t").axes[0]
    seeds, (mean,) = _artists(ax, "seed"), _artists(ax, "mean")
    assert [s.get_ydata().tolist() for s in seeds] == curve.values.tolist()
    np.testing.assert_allclose(mean.get_ydata(), curve.values.mean(axis=0))
    assert _artists(ax, "interval") == []
    low, high = ax.get_ylim()
    assert -1400.0 - 100 <= low < -1400.0 and -100.0 < high <= 0.0


def test_three_seeds_show_an_interval_within_the_observed_returns_and_thin_seed_lines():
    values = [[-1200.0, -250.0, -150.0], [-300.0, -200.0, -140.0], [-1300.0, -900.0, -160.0]]
    curve = _curve(values, (-1500.0, -100.0))
    ax = curves_figure([curve], "t").axes[0]
    seeds, (mean,), (band,) = (_artists(ax, g) for g in ("seed", "mean", "interval"))
    assert len(seeds) == 3 and all(s.get_linewidth() < mean.get_linewidth() for s in seeds)
    band_y = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    assert band_y.min() >= -1500.0 and band_y.max() <= -100.0
    # Unclipped, the first point's interval would be -933 ± 1242: far outside what happened.
    assert band_y.min() == pytest.approx(-1500.0)
    assert ax.get_ylim()[1] <= 0.0


def test_the_margin_of_all_negative_returns_stops_at_zero():
    ax = curves_figure([_curve([[-900.0, -5.0], [-800.0, -2.0]], (-1000.0, -1.0))], "t").axes[0]
    assert ax.get_ylim() == (-1000.0 - 0.05 * 999.0, 0.0)


def test_one_seed_is_one_line():
    ax = curves_figure([_curve([[-5.0, -3.0]], (-6.0, -2.0))], "t").axes[0]
    assert len(_artists(ax, "mean")) == 1 and _artists(ax, "seed") + _artists(ax, "interval") == []
