"""The benchmark scripts: XLA FLOPs of an agent step (`scripts/benchmark_throughput.py`), the
side-by-side report of `scripts/benchmark_peer.py` on fake measurements (no peer needed) and the
trace summary of `scripts/profile_loop.py`."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # as when they run: the scripts import each other


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def throughput():
    return _script("benchmark_throughput")


@pytest.fixture(scope="module")
def peer():
    return _script("benchmark_peer")


def test_xla_flops_counts_a_matmul(throughput):
    import jax
    import jax.numpy as jnp

    dot = lambda a, b: a @ b
    small = throughput.xla_flops(dot, jnp.ones((8, 16)), jnp.ones((16, 4)))
    assert small == pytest.approx(2 * 8 * 16 * 4, rel=0.1)
    assert throughput.xla_flops(dot, jnp.ones((8, 32)), jnp.ones((32, 4))) > 1.9 * small

    # A scan of 5 matmuls: XLA counts the body once, the jaxpr count 5 times.
    def looped(w, x):
        return jax.lax.scan(lambda h, _: (jnp.tanh(w @ h), None), x, None, length=5)[0]

    counts = throughput.count_flops(looped, jnp.ones((16, 16)), jnp.ones(16))
    assert counts["once"] == pytest.approx(counts["xla"], rel=0.2)
    assert counts["flops"] == pytest.approx(5 * counts["once"])


@pytest.mark.slow  # three planner compilations (about a minute on 2 idle cores)
def test_plan_flops_grow_with_size_and_samples(throughput):
    plan = lambda size, **kw: throughput.step_flops(
        "jax/pendulum", "tdmpc2", size, parts=("plan",), **kw
    )
    tiny = plan("tiny", **{"planner.num_samples": 64, "planner.num_elites": 16})
    assert tiny["plan"] > 0 and tiny["update"] == 0 and tiny["total"] == tiny["plan"]
    # XLA counts each scan body once; so does the jaxpr count with trip counts off.
    assert tiny["xla_plan"] == pytest.approx(tiny["once_plan"], rel=0.1)
    assert tiny["plan"] > 2 * tiny["xla_plan"]
    more = plan("tiny", **{"planner.num_samples": 128, "planner.num_elites": 16})
    assert more["plan"] > 1.5 * tiny["plan"]
    bigger = plan("1m", **{"planner.num_samples": 64, "planner.num_elites": 16})
    assert bigger["plan"] > 10 * tiny["plan"] and bigger["params"] > tiny["params"]


@pytest.mark.slow
def test_step_flops_add_up_and_reanalyze_is_amortised(throughput):
    tiny = throughput.step_flops("jax/pendulum", "pompc", "tiny")
    assert tiny["update"] > 0 and tiny["reanalyze_call"] > tiny["plan"]
    assert tiny["reanalyze"] == pytest.approx(tiny["reanalyze_call"] / 10)
    assert tiny["total"] == pytest.approx(tiny["plan"] + tiny["update"] + tiny["reanalyze"])
    assert throughput.step_flops("jax/pendulum", "tdmpc2", "tiny")["reanalyze"] == 0


def test_throughput_table_from_fake_rows(throughput, tmp_path):
    row = dict(task="jax/pendulum", preset="pompc", size="tiny", params=1000, plan=2e7)
    row.update(update=4e8, reanalyze_call=1e9, reanalyze=1e8, total=5.2e8, ms_per_step=100.0)
    row.update(seeds=1, xla_total=3e8, once_total=3.1e8)
    meta = dict(
        date="d", device="CPU (x)", load_before="1", load_after="2", matmul_gflops=(30.0, 52.0)
    )
    out = tmp_path / "t.md"
    text = throughput.write_table([row], out, "python scripts/benchmark_throughput.py", meta, 18)
    assert out.read_text() == text
    # 520 MFLOP in 0.1 s = 5.2 GFLOP/s = 10% of 52; 18 TFLOP/s / 520 MFLOP = 34,615 steps/s
    assert "| 520.0 | 300.0 | 310.0 | 100 | 5.2 | 10% | 34,615 |" in text
    # The λ-sweep section (--sweep) survives a rewrite of the tables, and replaces its old self.
    sweep = _script("benchmark_sweep")
    sweep.write_section(out, f"{sweep.SECTION_MARK}\nold sweep\n")
    sweep.write_section(out, f"{sweep.SECTION_MARK}\nnew sweep\n")
    throughput.write_table([row], out, "python scripts/benchmark_throughput.py", meta, 18)
    page = out.read_text()
    assert page.startswith(text.rstrip("\n")) and page.endswith("new sweep\n")
    assert "old sweep" not in page and page.count(sweep.SECTION_MARK) == 1


def test_peer_report_on_fake_measurements(peer, tmp_path):
    args = peer.parse_args(["--configs", "small", "5m", "--seed-steps", "20"])
    assert args.peer_dir is None and args.seed_steps == 20 and args.configs == ["small", "5m"]
    R = peer.Result
    results = [
        R("peer", "tdmpc2-jax", "small", 10.0, 300, 60.0, 259_505, (0.1, 0.5)),
        R("ours", "tdmpc2", "small", 20.0, 300, 90.0, 259_505, (0.2, 0.9)),
        R("ours", "pompc", "small", 4.0, 300, 120.0, 300_000, None),
        R("peer", "tdmpc2-jax", "5m", None, note="not run: the peer failed (boom)"),
        R("ours", "tdmpc2", "5m", 1.5, 50, 100.0, 4_932_704, (1.0, 1.9)),
    ]
    out = tmp_path / "peer.md"
    text = peer.write_report(results, out, "python scripts/benchmark_peer.py X", {"date": "d"})
    assert out.read_text() == text
    assert "`python scripts/benchmark_peer.py X`" in text
    assert "| small | ours | tdmpc2 | 259,505 | 20.00 | 2.00x | 300 | 90.0 | 0.20 / 0.90 |" in text
    assert "| small | ours | pompc | 300,000 | 4.00 | 0.40x |" in text
    assert "runs at 2.00x the peer's agent steps/s (target >= 1.5x): met" in text
    assert "not run: the peer failed (boom)" in text
    assert "- `5m`: no ratio" in text
    assert "ours 90.0 s, the peer's 60.0 s (1.50x; target <= 2x): met" in text


def test_peer_without_peer_dir_is_reported_not_run(peer):
    result = peer.run_peer("small", peer.parse_args([]))
    assert result.steps_per_s is None and result.note.startswith("not run")


@pytest.mark.parametrize(
    "name",
    [
        "benchmark_call_length",
        "benchmark_cold_start",
        "benchmark_peer",
        "benchmark_sweep",
        "benchmark_throughput",
        "profile_loop",
    ],
)
def test_help_runs(name):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_profile_loop_sums_xla_operations_by_kind(tmp_path):
    import gzip
    import json

    profile = _script("profile_loop")
    meta = lambda tid, name: {"ph": "M", "name": "thread_name", "pid": 1, "tid": tid, "args": {"name": name}}  # fmt: skip
    op = lambda tid, name, dur: {"ph": "X", "pid": 1, "tid": tid, "name": name, "ts": 0, "dur": dur}  # fmt: skip
    events = [
        meta(1, "tf_XLAEigen/123"), meta(2, "tf_XLAEigen/456"), meta(3, "python"),
        meta(4, "tf_XLAPjRtCpuClient/7"),
        op(1, "ynn_fusion.3", 10.0), op(2, "ynn_fusion.17", 5.0), op(1, "copy", 2.0),
        op(1, "while.4", 100.0), op(2, "ThunkExecutor::Execute", 50.0),  # containers
        op(3, "ynn_fusion.1", 1000.0), op(4, "copy.2", 1000.0),  # not XLA compute threads
    ]  # fmt: skip
    trace = tmp_path / "host.trace.json.gz"
    trace.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    assert profile.operation_times(trace) == {"ynn_fusion": 15.0, "copy": 2.0}
    assert profile.parse_overrides(["model.num_q=2", "loss.rho=0.5"]) == {
        "model.num_q": 2,
        "loss.rho": 0.5,
    }
    with pytest.raises(SystemExit, match="group.field=value"):
        profile.parse_overrides(["num_q=2"])
