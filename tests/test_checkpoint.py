import os
import pathlib
import re
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from pompc_eqx.checkpoint import (
    CheckpointError,
    config_differences,
    latest_checkpoint,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


NUM_SEEDS = 3
CONFIG = {
    "model": {"width": 16, "depth": 2},
    "num_seeds": NUM_SEEDS,
    "total_steps": 1000,
    "eval": {"every": 100, "episodes": 2},
    "tags": ("a", "b"),
}


def make_state(width: int = 16):
    """A small train state with every kind of leaf the real one has."""
    mlp = eqx.nn.MLP(4, 2, width, 2, key=jr.key(0))
    optim = optax.adam(1e-3)
    params = eqx.filter(mlp, eqx.is_inexact_array)
    opt_state = optim.init(params)
    # One update, so count/mu/nu are not trivially zero.
    updates, opt_state = optim.update(jax.tree.map(jnp.ones_like, params), opt_state)
    return {
        "mlp": eqx.apply_updates(mlp, updates),
        "opt_state": opt_state,
        "seed_keys": jr.split(jr.key(1), NUM_SEEDS),
        "rbg_key": jr.key(2, impl="rbg"),
        "buffer_obs": jr.normal(jr.key(3), (NUM_SEEDS, 5, 4)),
        "buffer_size": jnp.arange(NUM_SEEDS, dtype=jnp.int32),
        "is_first": jnp.array([True, False, True]),
        "scale": jnp.linspace(0, 1, 5, dtype=jnp.bfloat16),
        "host_counter": np.arange(4, dtype=np.int32),
    }


def _is_key(x):
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def assert_identical(a, b):
    leaves_a, treedef_a = jax.tree_util.tree_flatten_with_path(a)
    leaves_b, treedef_b = jax.tree_util.tree_flatten_with_path(b)
    assert treedef_a == treedef_b
    for (path, x), (_, y) in zip(leaves_a, leaves_b):
        name = jax.tree_util.keystr(path)
        if not eqx.is_array(x):
            assert x is y, name
            continue
        assert type(x) is type(y) or isinstance(y, jax.Array), name
        if _is_key(x):
            assert str(jr.key_impl(x)) == str(jr.key_impl(y)), name
            x, y = jr.key_data(x), jr.key_data(y)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("like_kind", ["eval_shape", "concrete"])
def test_round_trip_is_bit_identical(tmp_path, like_kind):
    state = make_state()
    like = eqx.filter_eval_shape(make_state) if like_kind == "eval_shape" else make_state()
    path = save_checkpoint(tmp_path, 7, state, metadata={"config": CONFIG, "step": 7})
    assert path == tmp_path / "step_000000000007.ckpt"

    restored, metadata, host_state = load_checkpoint(path, like, expected_config=CONFIG)

    assert_identical(state, restored)
    assert metadata == {"config": {**CONFIG, "tags": ["a", "b"]}, "step": 7}
    assert host_state is None
    assert isinstance(
        restored["host_counter"], np.ndarray if like_kind == "concrete" else jax.Array
    )
    x = jnp.ones(4)
    assert jnp.array_equal(restored["mlp"](x), state["mlp"](x))


def test_restored_keys_draw_the_same_numbers(tmp_path):
    state = make_state()
    save_checkpoint(tmp_path, 1, state, metadata={})
    restored, _, _ = load_checkpoint(tmp_path, eqx.filter_eval_shape(make_state))
    draw = jax.vmap(lambda k: jr.normal(k, (6,)))
    assert jnp.array_equal(draw(restored["seed_keys"]), draw(state["seed_keys"]))
    assert jnp.array_equal(
        jr.uniform(restored["rbg_key"], (6,)), jr.uniform(state["rbg_key"], (6,))
    )


def test_host_state_and_header_round_trip(tmp_path):
    host_state = bytes(range(256)) * 1000 + b"\x00" * 3
    save_checkpoint(tmp_path, 42, make_state(), metadata={"config": CONFIG}, host_state=host_state)
    _, _, restored = load_checkpoint(tmp_path, make_state())
    assert restored == host_state
    header = read_metadata(tmp_path)
    assert header["step"] == 42
    assert header["metadata"]["config"]["model"] == {"width": 16, "depth": 2}
    assert {"jax", "equinox", "numpy", "python"} <= header["versions"].keys()


@pytest.mark.parametrize("fail_at", ["replace", "fsync"])
def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    old = make_state()
    save_checkpoint(tmp_path, 1, old, metadata={"step": 1}, keep=1)

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, fail_at, crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path, 2, make_state(width=8), metadata={"step": 2}, keep=1)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000000001.ckpt"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000000000001.ckpt"
    restored, metadata, _ = load_checkpoint(tmp_path, make_state())
    assert_identical(old, restored)
    assert metadata == {"step": 1}


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead_pid = 2**22 + 1  # above Linux's pid_max, so no such process
    stale = tmp_path / f".step_000000000001.ckpt.{dead_pid}.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = tmp_path / f".step_000000000001.ckpt.{os.getpid()}.0123abcd.tmp"
    mine.write_bytes(b"being written")
    save_checkpoint(tmp_path, 2, {"x": jnp.zeros(2)}, metadata={})
    assert not stale.exists() and mine.exists()


def _flip_byte(path: pathlib.Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(where * (len(data) - 1))] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: _flip_byte(p, 0.0),  # magic
        lambda p: _flip_byte(p, 0.02),  # header
        lambda p: _flip_byte(p, 0.6),  # payload
        lambda p: _flip_byte(p, 1.0),  # digest
        lambda p: p.write_bytes(p.read_bytes()[:-100]),
        lambda p: p.write_bytes(p.read_bytes()[:10]),
        lambda p: p.write_bytes(b""),
    ],
    ids=["magic", "header", "payload", "digest", "truncated", "stub", "empty"],
)
def test_corruption_is_detected(tmp_path, damage):
    path = save_checkpoint(tmp_path, 3, make_state(), metadata={"config": CONFIG})
    damage(path)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path, make_state(), expected_config=CONFIG)


def test_corruption_message_points_to_older_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, make_state(), metadata={})
    path = save_checkpoint(tmp_path, 2, make_state(), metadata={})
    _flip_byte(path, 0.5)
    with pytest.raises(CheckpointError, match="step_000000000001.ckpt"):
        load_checkpoint(tmp_path, make_state())


def test_structure_mismatch_names_the_path(tmp_path):
    save_checkpoint(tmp_path, 1, make_state(width=16), metadata={})
    like = eqx.filter_eval_shape(make_state, width=32)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path, like)
    message = str(err.value)
    assert "['mlp'].layers[0].weight" in message
    assert "float32[16,4]" in message and "float32[32,4]" in message
    assert "model size differs" in message


def test_structure_mismatch_missing_leaf_and_dtype(tmp_path):
    save_checkpoint(tmp_path, 1, make_state(), metadata={})
    fewer = {k: v for k, v in make_state().items() if k != "scale"}
    with pytest.raises(CheckpointError, match=re.escape("['scale']")):
        load_checkpoint(tmp_path, fewer)
    other_dtype = {**make_state(), "buffer_size": jnp.arange(NUM_SEEDS, dtype=jnp.uint8)}
    with pytest.raises(CheckpointError, match=r"\['buffer_size'\].*dtype differs"):
        load_checkpoint(tmp_path, other_dtype)


def test_config_mismatch_lists_keys_and_respects_ignore_keys(tmp_path):
    save_checkpoint(tmp_path, 1, make_state(), metadata={"config": CONFIG})
    now = {
        **CONFIG,
        "model": {"width": 16, "depth": 3},
        "total_steps": 5000,
        "eval": {"every": 50, "episodes": 2},
        "new_flag": True,
    }
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path, make_state(), expected_config=now, ignore_keys=["total_steps"])
    message = str(err.value)
    assert "model.depth: saved 2, now 3" in message
    assert "eval.every: saved 100, now 50" in message
    assert "new_flag: saved <absent>, now true" in message
    assert "total_steps: saved" not in message
    assert "model.width" not in message

    # The keys a resumed run may change are accepted; a whole sub-dict can be ignored.
    resumed = {**CONFIG, "total_steps": 5000, "eval": {"every": 50, "episodes": 4}}
    load_checkpoint(
        tmp_path, make_state(), expected_config=resumed, ignore_keys=("total_steps", "eval")
    )


def test_config_differences_tuple_equals_list():
    assert config_differences({"a": [1, 2], "b": {"c": 1.5}}, {"a": (1, 2), "b": {"c": 1.5}}) == []
    assert config_differences({"x": float("nan"), "y": 1}, {"x": float("nan"), "y": 1.0}) == []
    assert config_differences({"b": {"c": 1}}, {"b": {"c": 2}}, ["b.c"]) == []
    assert config_differences({"b": {"c": 1}}, {"b": {"c": 2}}, ["b.cc"]) == ["b.c: saved 1, now 2"]


def test_missing_checkpoint_errors_mention_resume(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*--resume"):
        load_checkpoint(tmp_path / "nope", make_state())
    with pytest.raises(CheckpointError, match="No checkpoint.*--resume"):
        load_checkpoint(tmp_path, make_state())
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "nope") is None


def test_pruning_keeps_the_newest(tmp_path):
    tree = {"x": jnp.zeros(3)}
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, tree, metadata={}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_000000000030.ckpt",
        "step_000000000040.ckpt",
    ]
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000000000040.ckpt"

    # Resumed from an older step: the new checkpoint and anything newer are never pruned.
    save_checkpoint(tmp_path, 35, tree, metadata={}, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_000000000035.ckpt",
        "step_000000000040.ckpt",
    ]


_SHARDED_SCRIPT = """
import equinox as eqx, jax, jax.numpy as jnp, jax.random as jr, numpy as np, sys
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from pompc_eqx.checkpoint import load_checkpoint, save_checkpoint

assert len(jax.devices()) == 2
sharding = NamedSharding(Mesh(np.array(jax.devices()), ("seed",)), P("seed"))
tree = {
    "obs": jax.device_put(jnp.arange(24.0).reshape(4, 6), sharding),
    "keys": jax.device_put(jr.split(jr.key(0), 4), sharding),
}
assert len(tree["obs"].sharding.device_set) == 2
save_checkpoint(sys.argv[1], 1, tree, metadata={})
restored, _, _ = load_checkpoint(sys.argv[1], eqx.filter_eval_shape(lambda: tree))
assert np.array_equal(restored["obs"], np.arange(24.0).reshape(4, 6))
assert np.array_equal(jr.key_data(restored["keys"]), jr.key_data(tree["keys"]))
print("ok")
"""


def test_sharded_tree_is_gathered(tmp_path):
    # Needs two devices, which must be set before jax starts: run in a fresh process.
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SHARDED_SCRIPT), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
