"""Measure how much two MuJoCo versions disagree on the same model, keyframe and controls.

Run `record` once per MuJoCo version, each in its own environment, then `compare` the two
files. The second `record` reuses the first one's controls, so both runs step the same model
from the same keyframe with the same control sequence; only the MuJoCo version differs.

    # environment 1 (e.g. `pip install mujoco==3.1.6 numpy`)
    python scripts/compare_mujoco_physics.py record --model h1hand_pos_walk.xml \\
        --steps 50 --out states-a.npz
    # environment 2 (e.g. this project's mujoco)
    python scripts/compare_mujoco_physics.py record --model h1hand_pos_walk.xml \\
        --controls-from states-a.npz --out states-b.npz
    # either environment
    python scripts/compare_mujoco_physics.py compare states-a.npz states-b.npz

`record` loads the raw MJCF file with `mujoco.MjModel.from_xml_path` (no wrapper code),
resets to keyframe 0 if the model has one (else to `qpos0`), draws a seeded control sequence
uniformly inside each actuator's `ctrlrange` (in [-1, 1] for unlimited actuators; `--scale`
shrinks the draws toward the range's midpoint, which is HumanoidBench's action 0), holds each
control for `--hold` physics steps (HumanoidBench holds an action for 10) and calls `mj_step`
`--steps` times. It saves qpos, qvel and act after every physics step (row 0 is the initial
state), the number of contacts each step found, the controls and `mujoco.__version__`.
`compare` prints the largest absolute difference of qpos, qvel and act (act only if it
differs) and both runs' contact counts at a few steps, and the first step where each
difference exceeds the threshold. Needs only mujoco and numpy.
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np


REPORT_STEPS = (1, 2, 5, 10, 50, 100, 500)
FIELDS = ("qpos", "qvel", "act")


def make_controls(model, steps: int, hold: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """(steps, nu) controls: one uniform draw per `hold` steps inside each actuator's range,
    shrunk toward its midpoint by `scale` (0: always the midpoint, HumanoidBench's action 0)."""
    rng = np.random.default_rng(seed)
    low = np.full(model.nu, -1.0)
    high = np.full(model.nu, 1.0)
    limited = np.asarray(model.actuator_ctrllimited, dtype=bool)
    low[limited] = model.actuator_ctrlrange[limited, 0]
    high[limited] = model.actuator_ctrlrange[limited, 1]
    middle, half = (high + low) / 2, (high - low) / 2
    draws = middle + scale * half * rng.uniform(-1.0, 1.0, size=(-(-steps // hold), model.nu))
    return np.repeat(draws, hold, axis=0)[:steps]


def record(
    model_path: str,
    steps: int | None,
    out: str,
    *,
    seed: int = 0,
    hold: int = 1,
    scale: float = 1.0,
    keyframe: int | None = None,
    controls_from: str | None = None,
) -> dict:
    """Step the raw model and write the trajectory to `out` (an .npz). Returns what it wrote."""
    import mujoco

    model = mujoco.MjModel.from_xml_path(model_path)
    data = mujoco.MjData(model)
    if keyframe is None:
        keyframe = 0 if model.nkey > 0 else -1
    if keyframe >= 0:
        mujoco.mj_resetDataKeyframe(model, data, keyframe)
    else:
        mujoco.mj_resetData(model, data)

    if controls_from is not None:
        with np.load(controls_from) as source:
            ctrl = source["ctrl"]
        if ctrl.shape[1] != model.nu:
            raise SystemExit(
                f"{controls_from} has controls for {ctrl.shape[1]} actuators; the model has "
                f"{model.nu}: record both runs with the same model"
            )
        if steps is None:
            steps = len(ctrl)
        if steps > len(ctrl):
            raise SystemExit(f"{controls_from} has {len(ctrl)} steps of controls; asked {steps}")
        ctrl = ctrl[:steps]
    else:
        steps = 50 if steps is None else steps
        ctrl = make_controls(model, steps, hold, seed, scale)

    states = {name: [np.array(getattr(data, name))] for name in FIELDS}
    ncon = []  # contacts that each step's collision detection found (before integrating)
    for t in range(steps):
        data.ctrl[:] = ctrl[t]
        mujoco.mj_step(model, data)
        ncon.append(data.ncon)
        for name in FIELDS:
            states[name].append(np.array(getattr(data, name)))

    result = {name: np.stack(values) for name, values in states.items()}
    result.update(
        ctrl=ctrl,
        ncon=np.asarray(ncon, dtype=np.int64),
        time=np.float64(data.time),
        timestep=np.float64(model.opt.timestep),
        keyframe=np.int64(keyframe),
        mujoco_version=np.str_(mujoco.__version__),
        model_name=np.str_(Path(model_path).name),
        model_sha256=np.str_(hashlib.sha256(Path(model_path).read_bytes()).hexdigest()),
    )
    np.savez(out, **result)
    return result


def _max_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-step max |a - b| over the state dimensions; a NaN on either side counts as inf."""
    if a.shape[1] == 0:
        return np.zeros(len(a))
    diff = np.abs(a - b)
    diff[np.isnan(diff)] = np.inf
    return diff.max(axis=1)


def compare(path_a: str, path_b: str, threshold: float = 1e-6) -> dict:
    """Per-step max abs differences of qpos/qvel/act, and the first step over `threshold`
    (None if never). Refuses files whose controls or shapes differ."""
    with np.load(path_a) as a, np.load(path_b) as b:
        a, b = dict(a), dict(b)
    steps = min(len(a["ctrl"]), len(b["ctrl"]))
    if a["ctrl"].shape[1] != b["ctrl"].shape[1] or not np.array_equal(
        a["ctrl"][:steps], b["ctrl"][:steps]
    ):
        raise SystemExit(
            "the two files were recorded with different controls: record the second one with "
            f"--controls-from {path_a}"
        )
    for name in FIELDS:
        if a[name].shape[1] != b[name].shape[1]:
            raise SystemExit(f"{name} sizes differ ({a[name].shape[1]} vs {b[name].shape[1]})")
    diffs = {name: _max_abs(a[name][: steps + 1], b[name][: steps + 1]) for name in FIELDS}
    first = {}
    for name, diff in diffs.items():
        over = np.flatnonzero(diff > threshold)
        first[name] = int(over[0]) if len(over) else None
    return {
        "steps": steps,
        "diffs": diffs,
        "ncon": (a["ncon"][:steps], b["ncon"][:steps]),
        "first_over": first,
        "threshold": threshold,
        "versions": (str(a["mujoco_version"]), str(b["mujoco_version"])),
        "same_model_file": str(a["model_sha256"]) == str(b["model_sha256"]),
        "timesteps": (float(a["timestep"]), float(b["timestep"])),
    }


def format_report(result: dict, names: tuple[str, str]) -> str:
    version_a, version_b = result["versions"]
    fields = [name for name in FIELDS if name != "act" or result["diffs"]["act"].any()]
    lines = [
        f"a: {names[0]} (mujoco {version_a})",
        f"b: {names[1]} (mujoco {version_b})",
    ]
    if not result["same_model_file"]:
        lines.append("warning: the two runs loaded different model files")
    if result["timesteps"][0] != result["timesteps"][1]:
        lines.append(f"warning: timesteps differ {result['timesteps']}")
    header = f"{'step':>6} " + " ".join(f"{'max|d' + name + '|':>12}" for name in fields)
    header += f" {'contacts a/b':>13}"
    lines += ["", header, "-" * len(header)]
    for step in REPORT_STEPS:
        if step <= result["steps"]:
            values = " ".join(f"{result['diffs'][name][step]:>12.3e}" for name in fields)
            contacts = f"{result['ncon'][0][step - 1]}/{result['ncon'][1][step - 1]}"
            lines.append(f"{step:>6} {values} {contacts:>13}")
    lines.append("")
    for name in fields:
        step = result["first_over"][name]
        where = f"step {step}" if step is not None else f"never (in {result['steps']} steps)"
        lines.append(f"first step with max|d{name}| > {result['threshold']:g}: {where}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="step a model with this mujoco and save the states")
    rec.add_argument("--model", required=True, help="MJCF file (loaded standalone)")
    rec.add_argument(
        "--steps",
        type=int,
        default=None,
        help="physics steps (default 50, or all of --controls-from)",
    )
    rec.add_argument("--out", required=True, help="output .npz")
    rec.add_argument("--seed", type=int, default=0, help="seed of the control sequence")
    rec.add_argument("--hold", type=int, default=1, help="physics steps per control draw")
    rec.add_argument("--scale", type=float, default=1.0, help="0: midpoint controls only")
    rec.add_argument("--keyframe", type=int, default=None, help="default: 0 if any; -1: qpos0")
    rec.add_argument("--controls-from", default=None, help="reuse the controls of this .npz")
    cmp = commands.add_parser("compare", help="print the state differences of two recordings")
    cmp.add_argument("a")
    cmp.add_argument("b")
    cmp.add_argument("--threshold", type=float, default=1e-6)
    args = parser.parse_args(argv)

    if args.command == "record":
        result = record(
            args.model,
            args.steps,
            args.out,
            seed=args.seed,
            hold=args.hold,
            scale=args.scale,
            keyframe=args.keyframe,
            controls_from=args.controls_from,
        )
        print(
            f"mujoco {result['mujoco_version']}: {len(result['ctrl'])} steps of "
            f"{result['model_name']} from keyframe {int(result['keyframe'])} -> {args.out}"
        )
    else:
        print(format_report(compare(args.a, args.b, args.threshold), (args.a, args.b)))


if __name__ == "__main__":
    sys.exit(main())
