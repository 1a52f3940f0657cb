"""scripts/compare_mujoco_physics.py on a tiny two-link arm: same MuJoCo, same controls gives
zero difference; a changed timestep or one changed control shows up at the right step."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compare_mujoco_physics.py"

ARM = """
<mujoco model="arm">
  <option timestep="{timestep}"/>
  <worldbody>
    <geom name="floor" type="plane" size="1 1 0.1"/>
    <body name="upper" pos="0 0 1">
      <joint name="shoulder" type="hinge" axis="0 1 0"/>
      <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.04"/>
      <body name="lower" pos="0.3 0 0">
        <joint name="elbow" type="hinge" axis="0 1 0" range="-2 2"/>
        <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor joint="shoulder" ctrlrange="-2 2"/>
    <motor joint="elbow" ctrlrange="-1 1"/>
  </actuator>
  <keyframe>
    <key name="start" qpos="0.3 -0.5"/>
  </keyframe>
</mujoco>
"""


def _load_script():
    spec = importlib.util.spec_from_file_location("compare_mujoco_physics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


physics = _load_script()


@pytest.fixture
def arm(tmp_path):
    def write(timestep=0.01, name="arm.xml"):
        path = tmp_path / name
        path.write_text(ARM.format(timestep=timestep))
        return str(path)

    return write


def test_same_model_and_controls_give_zero_difference(arm, tmp_path):
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    first = physics.record(arm(), 20, a, seed=3)
    physics.record(arm(), None, b, controls_from=a)
    result = physics.compare(a, b)
    assert result["steps"] == 20
    for name in ("qpos", "qvel"):
        assert result["diffs"][name].shape == (21,)
        assert not result["diffs"][name].any()
        assert result["first_over"][name] is None
    assert result["same_model_file"]
    # Keyframe 0, controls inside each actuator's range, held `hold` steps (default 1).
    np.testing.assert_array_equal(first["qpos"][0], [0.3, -0.5])
    assert first["ctrl"].shape == (20, 2)
    assert np.abs(first["ctrl"][:, 0]).max() <= 2 and np.abs(first["ctrl"][:, 1]).max() <= 1
    assert len(np.unique(first["ctrl"][:, 0])) == 20


def test_hold_and_scale_shape_the_controls(arm, tmp_path):
    held = physics.record(arm(), 9, str(tmp_path / "h.npz"), hold=4)["ctrl"]
    assert len(np.unique(held[:, 0])) == 3
    np.testing.assert_array_equal(held[:4], np.repeat(held[:1], 4, axis=0))
    middle = physics.record(arm(), 5, str(tmp_path / "m.npz"), scale=0.0)["ctrl"]
    np.testing.assert_array_equal(middle, np.zeros((5, 2)))


def test_a_different_timestep_differs_from_step_one(arm, tmp_path):
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    physics.record(arm(0.01), 10, a)
    physics.record(arm(0.005, name="arm2.xml"), None, b, controls_from=a)
    result = physics.compare(a, b)
    assert result["diffs"]["qpos"][0] == 0 and result["diffs"]["qvel"][0] == 0
    assert result["first_over"] == {"qpos": 1, "qvel": 1, "act": None}
    assert result["timesteps"] == (0.01, 0.005)
    assert "warning: timesteps differ" in physics.format_report(result, (a, b))


def test_one_changed_control_shows_up_at_its_step(arm, tmp_path):
    a, edited, b = (str(tmp_path / name) for name in ("a.npz", "edited.npz", "b.npz"))
    physics.record(arm(), 12, a)
    with np.load(a) as data:
        contents = dict(data)
    contents["ctrl"][6, 1] += 0.5  # the 7th mj_step's control: states differ from step 7 on
    np.savez(edited, **contents)
    physics.record(arm(), None, b, controls_from=edited)
    with np.load(a) as first, np.load(b) as second:
        for name in ("qpos", "qvel"):
            diff = physics._max_abs(first[name], second[name])
            assert not diff[:7].any() and diff[7] > 0, name
    # `compare` is for the same controls under two MuJoCo versions: it refuses this pair.
    with pytest.raises(SystemExit, match="different controls"):
        physics.compare(a, b)


def test_end_to_end_as_a_subprocess(arm, tmp_path):
    model = arm()

    def run(*args):
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            check=True,
        ).stdout

    run("record", "--model", model, "--steps", "12", "--out", "a.npz")
    run("record", "--model", model, "--controls-from", "a.npz", "--out", "b.npz")
    report = run("compare", "a.npz", "b.npz")
    assert "max|dqpos|" in report and "max|dqvel|" in report
    assert "first step with max|dqvel| > 1e-06: never (in 12 steps)" in report
    rows = [line.split() for line in report.splitlines() if line.split()[:1] in (["1"], ["10"])]
    assert [row[0] for row in rows] == ["1", "10"]
    assert all(float(value) == 0 for row in rows for value in row[1:3])
