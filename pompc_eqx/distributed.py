"""One run over several processes (one per host, or several on one host) on JAX's own
multi-controller runtime: every process runs the same program on the devices of all processes.

`initialize` joins the job (`jax.distributed.initialize`, configured by its environment
variables or SLURM). Then the batch axis of runs is sharded over every process's devices; each
process computes its own runs, and the host side sees every run through `gather` (so the NaN
check and the evaluation agree in every process). Only the main process (index 0) writes
files: the run directory, CSV tables, Aim, checkpoints. With one process all of this reduces to
the single-process calls.
"""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import PyTree


# A process that stops answering ends the job after this long (the others exit with an error).
HEARTBEAT_SECONDS = 20


def initialize() -> None:
    """Join the multi-process job described by `JAX_COORDINATOR_ADDRESS` (host:port of process
    0), `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, or, where these are not set, by what JAX
    detects (SLURM, Open MPI, cloud TPUs); must come before anything else uses JAX."""
    # Collectives between CPU devices of different processes (GPUs use their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    env = lambda name: int(os.environ[name]) if name in os.environ else None
    jax.distributed.initialize(
        num_processes=env("JAX_NUM_PROCESSES"),
        process_id=env("JAX_PROCESS_ID"),
        heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
    )


def is_main() -> bool:
    """Whether this process writes the run's files and prints its progress."""
    return jax.process_index() == 0


def place(x: jax.Array, sharding: jax.sharding.Sharding) -> jax.Array:
    """`x` (the same full value in every process) as an array laid out by `sharding`, which
    may span the devices of other processes (each process keeps its own shards)."""
    if jax.process_count() == 1 or not x.is_fully_addressable:  # already spans the processes
        return jax.device_put(x, sharding)
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        impl = jr.key_impl(x)
        return jr.wrap_key_data(place(jr.key_data(x), sharding), impl=impl)
    full = np.asarray(x)
    return jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])


def gather(tree: PyTree) -> PyTree:
    """Every array of `tree` whole, as numpy, in every process (a collective with several
    processes: all of them must call it at the same point)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    arrays, rest = eqx.partition(tree, eqx.is_array)
    keys = lambda x: jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
    data = jax.tree.map(lambda x: jr.key_data(x) if keys(x) else x, arrays)
    whole = multihost_utils.process_allgather(data, tiled=True)
    whole = jax.tree.map(
        lambda x, w: jr.wrap_key_data(w, impl=jr.key_impl(x)) if keys(x) else w, arrays, whole
    )
    return eqx.combine(whole, rest)


def any_process(flag: bool) -> bool:
    """Whether `flag` is set in any process (a collective with several processes)."""
    if jax.process_count() == 1:
        return flag
    flags = multihost_utils.process_allgather(np.asarray([flag], np.int32))
    return bool(np.any(flags))


def gather_bytes(blob: bytes) -> list[bytes]:
    """Every process's `blob`, in process order (a collective with several processes)."""
    if jax.process_count() == 1:
        return [blob]
    data = np.frombuffer(blob, np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int64)).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    every = multihost_utils.process_allgather(padded).reshape(len(sizes), -1)
    return [row[:size].tobytes() for row, size in zip(every, sizes)]
