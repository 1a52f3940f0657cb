"""Our TD-MPC2 next to the public JAX TD-MPC2 (tdmpc2-jax), same machine, one run, back to back.

Times agent steps per second after the seed phase (one seed / one environment: plan + env step +
buffer write + one update per agent step) on `dmc/cartpole-swingup`, at two configurations:

- `5m`: both repos' default ~5M-parameter model (latent 512, hidden 512, encoder 256, 5 Q heads,
  512 samples, 6 MPPI iterations);
- `small`: latent = hidden width 128 (the peer ties every hidden width to latent_dim), encoder
  256, 2 Q heads, 256 samples, 4 iterations;

plus the cold start: wall time from launching the process to the end of its first planned agent
step (imports, env and model creation, compilation, the seed phase and the pretraining updates
included; both sides run the same number of pretraining updates).

Ours runs as `scripts/train.py` in a subprocess and is read from its `train.csv`
(`steps_per_second` of every window after the seed phase); the process is stopped once the timed
windows are written (the final evaluation is not waited for). The peer runs its own `train.py`,
unchanged, under a small wrapper (`PEER_TIMER`, started with the peer's Python) that timestamps
each planned action and keeps only the first `--seed-steps` updates of its pretraining burst
(its seed phase of 2,500 random steps is hard-coded and stays). The peer's code is not part of
this repository: install it in its own virtual environment (tdmpc2-jax commit 13b95c3,
`mujoco==3.17.0`, CPU jax) and pass its checkout and Python.

    python scripts/benchmark_peer.py --peer-dir ../tdmpc2-jax --peer-python ../peer-venv/bin/python

With the defaults (both configurations; tdmpc2, bmpc and pompc on our side) it should take about
15-20 minutes on an idle 2-core CPU (an estimate from single runs; under load much longer).
`--flops` adds the plan + update FLOPs of one agent step on both sides (the same jaxpr count
as `scripts/benchmark_throughput.py`, tracing only).

Writes `docs/results/peer.md` (the command, the machine, the load, the table). Without
`--peer-dir` (or if the peer fails) the peer's rows say "not run" and why.
"""

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time


REPO = pathlib.Path(__file__).resolve().parent.parent
TASK = "dmc/cartpole-swingup"
PEER_COMMIT = "13b95c3c9dcdcd8dab64c3c99980a4d9c08ae140"

CONFIGS = {
    "5m": {
        "ours": ["--model-size", "5m"],
        "peer": {},
        "what": "latent 512, hidden 512, encoder 256, 5 Q heads, 512 samples, 6 iterations",
    },
    "small": {
        "ours": [
            "--model-size",
            "5m",
            "--model.latent-dim",
            "128",
            "--model.mlp-dim",
            "128",
            "--model.enc-dim",
            "256",
            "--model.num-q",
            "2",
            "--planner.num-samples",
            "256",
            "--planner.iterations",
            "4",
        ],  # fmt: skip
        "peer": {
            "world_model.latent_dim": 128,
            "world_model.num_value_nets": 2,
            "tdmpc2.population_size": 256,
            "tdmpc2.mppi_iterations": 4,
        },
        "what": "latent 128, hidden 128, encoder 256, 2 Q heads, 256 samples, 4 iterations",
    },
}

# The peer side: the peer's own `train.py`, unchanged, run by this small wrapper (in the peer's
# environment, cwd = its checkout). It wraps `TDMPC2.act` and `TDMPC2.update` at the class:
# every planned action is timestamped (after `block_until_ready`), the pretraining burst keeps
# only its first `pretrain_updates` updates (the rest return at once), and the process ends
# after the timed steps with one `BENCH {json}` line.
PEER_TIMER = r"""
import json, os, sys, time
import jax
from tdmpc2_jax import TDMPC2
from tdmpc2_jax import train as peer

args = json.loads(sys.argv[1])
act, update = TDMPC2.act, TDMPC2.update
stamps, seen = [], {"updates": 0, "burst": True, "batch": None}
need = 2 + args["warmup"] + args["steps"]


def counted_update(self, **kw):
    seen["updates"] += 1
    seen["batch"] = kw
    if seen["burst"] and seen["updates"] > args["pretrain_updates"]:
        return self, {}
    return update(self, **kw)


def params(agent):
    m = agent.model
    names = ("encoder", "dynamics_model", "reward_model", "policy_model", "value_model",
             "continue_model")
    states = [getattr(m, n, None) for n in names]
    return sum(x.size for s in states if s is not None for x in jax.tree.leaves(s.params))


def flops(agent, observation):
    exec(args["flops"], globals())
    def plan(ag, o, k):
        z = ag.model.encode(o, ag.model.encoder.params, key=k)
        shape = (1, ag.horizon, ag.model.action_dim)
        warm = (jax.numpy.zeros(shape), jax.numpy.full(shape, ag.max_plan_std))
        return ag.plan(z=z, prev_plan=warm, train=True, key=k)
    def one_update(ag, k):
        return update(ag, **{**seen["batch"], "key": k})
    k = jax.random.PRNGKey(0)
    return dict(plan=jaxpr_flops(jax.make_jaxpr(plan)(agent, observation, k)),
                update=jaxpr_flops(jax.make_jaxpr(one_update)(agent, k)))


def timed_act(self, observation, **kw):
    seen["burst"] = False  # the burst ends before the first planned action
    out = jax.block_until_ready(act(self, observation, **kw))
    stamps.append(time.time())
    if len(stamps) == need:
        first = 1 + args["warmup"]
        report = dict(
            params=int(params(self)), steps=args["steps"], seconds=stamps[-1] - stamps[first],
            first_planned_end=stamps[0],
            flops=flops(self, observation) if args.get("flops") else None,
            versions={m: sys.modules[m].__version__ for m in ("jax", "flax")})
        print("\nBENCH " + json.dumps(report), flush=True)
        os._exit(0)
    return out


TDMPC2.act, TDMPC2.update = timed_act, counted_update
sys.argv = ["train.py", *(f"{k}={v}" for k, v in args["overrides"].items())]
peer.train()
"""


@dataclasses.dataclass
class Result:
    side: str  # "ours" or "peer"
    preset: str
    config: str
    steps_per_s: float | None = None
    timed_steps: int = 0
    cold_start_s: float | None = None
    params: int | None = None
    load: tuple[float, float] | None = None  # mean other-process cores, max
    note: str = ""
    flops: float | None = None  # plan + update of one agent step (`--flops`)


class LoadSampler:
    """Cores used by processes other than `own` (pids) while a measurement runs (/proc)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.samples, self.own = interval, [], set()
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def _cpu_times() -> dict[int, tuple[int, int]]:
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, ticks
            except (OSError, IndexError, ValueError):
                continue
        return out

    def _descendants(self, snapshot) -> set[int]:
        mine = set(self.own)
        changed = True
        while changed:
            extra = {pid for pid, (ppid, _) in snapshot.items() if ppid in mine} - mine
            mine |= extra
            changed = bool(extra)
        return mine

    def _run(self) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        prev, prev_t = self._cpu_times(), time.monotonic()
        while not self._stop.wait(self.interval):
            now, now_t = self._cpu_times(), time.monotonic()
            mine = self._descendants(now)
            other = sum(
                ticks - prev[pid][1]
                for pid, (_, ticks) in now.items()
                if pid in prev and pid not in mine
            )
            self.samples.append(other / hz / (now_t - prev_t))
            prev, prev_t = now, now_t

    def __enter__(self):
        self.own = {os.getpid()}
        if os.path.isdir("/proc"):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> tuple[float, float] | None:
        if not self.samples:
            return None
        return sum(self.samples) / len(self.samples), max(self.samples)


def count_ours(preset: str, config: str) -> int:
    import jax.random as jr

    from pompc_eqx.agent import init_agent
    from pompc_eqx.envs.registry import task_spec
    from pompc_eqx.presets import PRESETS
    from pompc_eqx.world_model import count_params

    cfg = PRESETS[preset][1]
    flags = CONFIGS[config]["ours"]
    values = dict(zip(flags[::2], flags[1::2]))
    model = dataclasses.replace(
        cfg.model,
        **{
            k.removeprefix("--model.").replace("-", "_"): int(v)
            for k, v in values.items()
            if k.startswith("--model.")
        },
    )
    planner = dataclasses.replace(
        cfg.planner,
        **{
            k.removeprefix("--planner.").replace("-", "_"): int(v)
            for k, v in values.items()
            if k.startswith("--planner.")
        },
    )
    cfg = dataclasses.replace(
        cfg, task=TASK, model_size=values["--model-size"], model=model, planner=planner
    )
    spec = task_spec(TASK)
    nets = init_agent(
        cfg.agent_config(spec.obs_dim, spec.action_dim, spec.episode_length), key=jr.key(0)
    ).nets
    return count_params((nets.encoder, nets.dynamics, nets.reward, nets.policy, nets.value))


def run_ours(preset: str, config: str, args) -> Result:
    """`scripts/train.py` in a subprocess; steps/s from its train.csv windows after the seed phase."""
    result = Result("ours", preset, config)
    timed = args.steps_5m if config == "5m" else args.steps_small
    chunk = args.chunk_5m if config == "5m" else args.chunk_small
    timed = max(chunk, timed // chunk * chunk)
    seed = args.seed_steps
    total = seed + timed
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="bench-ours-"))
    cmd = [
        sys.executable, str(REPO / "scripts" / "train.py"), preset, "--task", TASK,
        "--num-seeds", "1", "--seed-steps", str(seed), "--steps", str(total),
        "--chunk-steps", str(math.gcd(seed, chunk)), "--eval-every", str(total),
        "--checkpoint-every", str(total), "--eval-episodes", "1", "--no-aim", "--no-progress",
        "--run-dir", str(run_dir / "run"), *CONFIGS[config]["ours"],
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    csv_path = run_dir / "run" / "train.csv"
    log = open(run_dir / "log.txt", "w")
    first_row_at = None
    with LoadSampler() as sampler:
        launched = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        sampler.own.add(proc.pid)
        rows = []
        try:
            while True:
                rows = read_rows(csv_path)
                if first_row_at is None and any(int(r["agent_step"]) >= seed for r in rows):
                    first_row_at = time.monotonic() - launched
                if rows and int(rows[-1]["agent_step"]) >= total:
                    break
                if proc.poll() is not None:
                    rows = read_rows(csv_path)
                    break
                if time.monotonic() - launched > args.timeout:
                    result.note = f"timed out after {args.timeout:.0f} s"
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
    result.load = sampler.summary()
    after = [r for r in rows if int(r["agent_step"]) > seed]
    if not after:
        tail = (run_dir / "log.txt").read_text()[-400:].strip().replace("\n", " / ")
        result.note = result.note or f"no timed window written: {tail}"
        return result
    steps, seconds, prev = 0, 0.0, seed
    for r in after:
        n = int(r["agent_step"]) - prev
        steps, seconds, prev = (
            steps + n,
            seconds + n / float(r["steps_per_second"]),
            int(r["agent_step"]),
        )
    result.steps_per_s = steps / seconds
    result.timed_steps = steps
    if first_row_at is not None:
        # The window ending at the seed phase holds the burst (and the compiled chunk holds the
        # planner too); the first planned step takes one steady step after it.
        result.cold_start_s = first_row_at + 1 / result.steps_per_s
    if not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def read_rows(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r.get("steps_per_second")]


def _throughput():
    """scripts/benchmark_throughput.py (imported on use: it loads JAX and the package)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark_throughput

    return benchmark_throughput


def flops_source() -> str:
    """The source of `benchmark_throughput.jaxpr_flops` (and its tables), for the peer's side."""
    import inspect

    bt = _throughput()

    tables = f"ELEMENTWISE = {set(bt.ELEMENTWISE)!r}\nREDUCTIONS = {set(bt.REDUCTIONS)!r}\n"
    return "import math\n" + tables + inspect.getsource(bt.jaxpr_flops)


def our_flops(preset: str, config: str) -> float:
    """Plan + update FLOPs of one agent step (the reanalyze of bmpc/pompc not included)."""
    bt = _throughput()
    flags = CONFIGS[config]["ours"]
    values = dict(zip(flags[::2], flags[1::2]))
    size = values.pop("--model-size")
    overrides = {k.removeprefix("--").replace("-", "_"): int(v) for k, v in values.items()}
    r = bt.step_flops(TASK, preset, size, parts=("plan", "update"), xla=False, **overrides)
    return r["total"]


def run_peer(config: str, args) -> Result:
    result = Result("peer", "tdmpc2-jax", config)
    if args.peer_dir is None:
        result.note = "not run: no --peer-dir given"
        return result
    peer_dir = pathlib.Path(args.peer_dir).resolve()
    if not (peer_dir / "tdmpc2_jax" / "train.py").exists():
        result.note = f"not run: {peer_dir} has no tdmpc2_jax/train.py"
        return result
    timed = args.steps_5m if config == "5m" else args.steps_small
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        overrides = {
            "env.env_id": "cartpole-swingup",
            "env.num_envs": 1,
            "buffer_size": 100_000,
            "hydra.run.dir": tmp,  # its TensorBoard logs and checkpoints go there
            **CONFIGS[config]["peer"],
        }
        payload = dict(
            overrides=overrides,
            pretrain_updates=args.seed_steps,
            steps=timed,
            warmup=args.peer_warmup,
            flops=flops_source() if args.flops else None,
        )
        driver = pathlib.Path(tmp) / "peer_timer.py"
        driver.write_text(PEER_TIMER)
        env = dict(
            os.environ,
            PYTHONPATH=str(peer_dir),
            TF_CPP_MIN_LOG_LEVEL="2",
            MUJOCO_GL=os.environ.get("MUJOCO_GL", "disable"),
        )
        with LoadSampler() as sampler:
            launched = time.time()
            proc = subprocess.Popen(
                [args.peer_python, str(driver), json.dumps(payload)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=peer_dir,
            )
            sampler.own.add(proc.pid)
            try:
                out, _ = proc.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                result.note = f"not run: timed out after {args.timeout:.0f} s"
        result.load = sampler.summary()
    # The report may follow the peer's tqdm bar on the same line (tqdm ends lines with \r).
    reports = [line.split("BENCH ", 1)[1] for line in out.splitlines() if "BENCH " in line]
    if not reports:
        tail = out.strip().splitlines()[-3:]
        result.note = result.note or f"not run: the peer failed ({' / '.join(tail)[-300:]})"
        return result
    data = json.loads(reports[-1])
    result.steps_per_s = data["steps"] / data["seconds"]
    result.timed_steps = data["steps"]
    result.cold_start_s = data["first_planned_end"] - launched
    result.params = data["params"]
    if data.get("flops"):
        result.flops = data["flops"]["plan"] + data["flops"]["update"]
    return result


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def write_report(results: list[Result], out: pathlib.Path, command: str, meta: dict) -> str:
    """The markdown page: one row per (side, preset, configuration), ratios to the peer."""
    peer = {r.config: r for r in results if r.side == "peer"}
    ours_tdmpc2 = {r.config: r for r in results if r.side == "ours" and r.preset == "tdmpc2"}
    lines = [
        "# Side by side with tdmpc2-jax",
        "",
        "Written by `scripts/benchmark_peer.py`: our presets and the public JAX TD-MPC2",
        f"(tdmpc2-jax, commit `{PEER_COMMIT[:7]}`) on `{TASK}`, one seed / one environment,",
        "timed back to back in one run on the same machine.",
        "",
        f"- command: `{command}`",
        f"- date: {meta.get('date', '?')}; machine: {meta.get('cpu', '?')}",
        f"- load average (1/5/15 min) before: {meta.get('load_before', '?')}; "
        f"after: {meta.get('load_after', '?')}",
        f"- pretraining updates on both sides: {meta.get('seed_steps', '?')} (ours after as many "
        "random steps; the peer after its hard-coded 2,500 random steps)",
        "",
        "Configurations: "
        + "; ".join(f"`{name}` = {c['what']}" for name, c in CONFIGS.items())
        + ". Both use horizon 3, 24 policy samples, 64 elites, batch 256, 101 bins.",
        "",
        "| configuration | side | preset | params (h, d, R, pi, Q) | agent steps/s "
        "| vs peer | timed steps | cold start to 1st planned step [s] "
        "| other load, mean / max [cores] | plan + update GFLOP/step | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        ref = peer.get(r.config)
        ratio = (
            f"{r.steps_per_s / ref.steps_per_s:.2f}x"
            if r.steps_per_s and ref is not None and ref.steps_per_s
            else "—"
        )
        load = "—" if r.load is None else f"{r.load[0]:.2f} / {r.load[1]:.2f}"
        lines.append(
            f"| {r.config} | {r.side} | {r.preset} | {fmt(r.params, ',')} "
            f"| {fmt(r.steps_per_s, '.2f')} | {ratio} | {r.timed_steps or '—'} "
            f"| {fmt(r.cold_start_s, '.1f')} | {load} "
            f"| {fmt(None if r.flops is None else r.flops / 1e9, '.2f')} | {r.note} |"
        )
    lines += ["", "## Against the targets", ""]
    for config, target in (("5m", 1.0), ("small", 1.5)):
        ours, ref = ours_tdmpc2.get(config), peer.get(config)
        if ours is None or ref is None:
            continue
        if ours.steps_per_s and ref.steps_per_s:
            ratio = ours.steps_per_s / ref.steps_per_s
            verdict = "met" if ratio >= target else "missed"
            lines.append(
                f"- `{config}`: our `tdmpc2` runs at {ratio:.2f}x the peer's agent steps/s "
                f"(target >= {target}x): {verdict}."
            )
        else:
            lines.append(f"- `{config}`: no ratio ({ours.note or ref.note}).")
        if ours.cold_start_s and ref.cold_start_s:
            ratio = ours.cold_start_s / ref.cold_start_s
            verdict = "met" if ratio <= 2.0 else "missed"
            lines.append(
                f"- `{config}` cold start to the first planned step: ours {ours.cold_start_s:.1f} s,"
                f" the peer's {ref.cold_start_s:.1f} s ({ratio:.2f}x; target <= 2x): {verdict}."
            )
    lines += [
        "",
        "Method: agent steps/s is steps divided by wall time over the timed steps after the",
        "first planned step (ours: the `steps_per_second` of every `train.csv` window after the",
        "seed phase; the peer: its own `train.py` loop, timed between the ends of planned",
        "steps, after its first planned step and `--peer-warmup` more (its `act` compiles again",
        "once a previous plan exists), each end after `jax.block_until_ready`). 'Other load' is",
        "the CPU time used by processes outside the measured one (a",
        "/proc sampler, every 0.5 s), in cores; numbers taken with a load near or above one core",
        "are slowed by other jobs and only roughly comparable. Cold start: from launching the",
        "process to the end of its first planned step (ours: when the seed-phase window was",
        "written plus one steady step); it includes imports, environment and model creation,",
        "compilation, the seed phase and the pretraining burst.",
        "",
    ]
    if meta.get("notes"):
        lines += [meta["notes"], ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer-dir", default=None, help="checkout of tdmpc2-jax (commit 13b95c3)")
    parser.add_argument(
        "--peer-python", default="python", help="Python of the peer's virtual environment"
    )
    parser.add_argument("--configs", nargs="+", default=["small", "5m"], choices=sorted(CONFIGS))
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["tdmpc2", "bmpc", "pompc"],
        help="our presets to time (tdmpc2 is the one compared with the peer)",
    )
    parser.add_argument("--no-peer", action="store_true", help="time ours only")
    parser.add_argument("--seed-steps", type=int, default=50, help="seed steps on both sides")
    parser.add_argument("--steps-small", type=int, default=300, help="timed steps, small")
    parser.add_argument("--steps-5m", type=int, default=60, help="timed steps, 5m")
    parser.add_argument("--chunk-small", type=int, default=50, help="our window length, small")
    parser.add_argument("--chunk-5m", type=int, default=20, help="our window length, 5m")
    parser.add_argument(
        "--peer-warmup",
        type=int,
        default=5,
        help="peer planned steps not timed (its act compiles again once prev_plan exists)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    parser.add_argument(
        "--flops",
        action="store_true",
        help="also count plan + update FLOPs per agent step on both sides (tracing only)",
    )
    parser.add_argument("--keep-runs", action="store_true", help="keep our run directories")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "docs/results/peer.md")
    parser.add_argument("--notes", type=pathlib.Path, default=None, help="markdown to append")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The page shows the peer's paths as placeholders (they are local to the machine).
    shown = {args.peer_dir: "PEER_DIR", args.peer_python: "PEER_PYTHON"}
    given = sys.argv[1:] if argv is None else argv
    command = "python scripts/benchmark_peer.py " + " ".join(shown.get(a, a) for a in given)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "cpu": _throughput().cpu_name(),
        "load_before": load_average(),
        "seed_steps": args.seed_steps,
    }
    results = []
    for config in args.configs:
        if not args.no_peer:
            r = run_peer(config, args)
            print(f"peer {config}: {r}", flush=True)
            results.append(r)
        for preset in args.presets:
            r = run_ours(preset, config, args)
            try:
                r.params = count_ours(preset, config)
                if args.flops:
                    r.flops = our_flops(preset, config)
            except Exception as err:  # the counts are informative only
                r.note += f" (not counted: {err})"
            print(f"ours {preset} {config}: {r}", flush=True)
            results.append(r)
            meta["load_after"] = load_average()  # the page is rewritten after every row
            if args.notes is not None:
                meta["notes"] = args.notes.read_text()
            write_report(results, args.out, command.strip(), meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
