"""Host simulators of a run over several processes: each process creates and steps only the
simulators of the runs on its own devices.

`ShardedHostEnv` holds one `HostBatch` per device block of the mesh that this process owns.
`reset` and `step` are a `shard_map` over the run axis in which every device calls back into
its own block (the callback gets the block's index); so no observation or action crosses
processes, and blocks never share buffers. Which runs a process owns follows the mesh: block b
holds runs b * block_size ... (b + 1) * block_size - 1.
"""

import io
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Float, Key

from ..distributed import gather_bytes
from .base import AbstractEnv, EnvSpec, TimeStep
from .host import HostBatch, HostEnv, HostEnvState, pack_step, slot_seeds, unpack_step


class ShardedHostEnv(AbstractEnv):
    """`num_envs` host-simulated episodes split into the device blocks of `mesh` (axis
    `seed`); this process simulates only the blocks of its own devices.

    **Arguments:**
    - `make_block`: builds the `HostEnv` of one block (`num_envs // mesh.size` slots).
    - `mesh`: the one-axis (`seed`) mesh over the devices of every process.
    - `num_envs`: every process's slots together.
    """

    blocks: dict[int, HostBatch] = eqx.field(static=True)
    mesh: Mesh = eqx.field(static=True)
    spec: EnvSpec = eqx.field(static=True)
    num_envs: int = eqx.field(static=True)

    def __init__(self, make_block: Callable[[int], HostEnv], mesh: Mesh, num_envs: int):
        size = num_envs // mesh.size
        own = [b for b, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
        self.blocks = {b: make_block(size).host for b in own}
        self.mesh, self.num_envs = mesh, num_envs
        self.spec = next(iter(self.blocks.values())).spec

    def _per_block(self, fn: Callable, *args):
        """`fn(block index, *local args)` on every device's block of the run axis."""
        spec = PartitionSpec("seed")
        return jax.shard_map(
            lambda *xs: fn(jax.lax.axis_index("seed"), *xs),
            mesh=self.mesh,
            in_specs=(spec,) * len(args),
            out_specs=spec,
        )(*args)

    def reset(self, key: Key[Array, " seed"]) -> tuple[HostEnvState, Float[Array, "seed obs"]]:
        obs_dim = self.spec.obs_dim

        def local(block, key):
            shape = jax.ShapeDtypeStruct((key.shape[0], obs_dim + 1), jnp.float32)
            reset = lambda b, seeds: self.blocks[int(b)].reset_packed(seeds)
            return io_callback(reset, shape, block, slot_seeds(key))

        packed = self._per_block(local, key)
        return HostEnvState(t=packed[:, obs_dim].astype(jnp.int32)), packed[:, :obs_dim]

    def step(
        self, state: HostEnvState, action: Float[Array, "seed action"]
    ) -> tuple[HostEnvState, TimeStep]:
        obs_dim = self.spec.obs_dim

        def local(block, packed):
            # Unordered: the step counters in `packed` already order the calls of a block.
            shape = jax.ShapeDtypeStruct((packed.shape[0], 2 * obs_dim + 4), jnp.float32)
            step = lambda b, p: self.blocks[int(b)].step_packed(p)
            return io_callback(step, shape, block, packed)

        return unpack_step(self._per_block(local, pack_step(state, action)), obs_dim)

    def save_host_state(self) -> bytes:
        """Every block's simulators, from every process (a collective: all processes call it)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            **{f"block{b}": np.frombuffer(h.save(), np.uint8) for b, h in self.blocks.items()},
        )
        merged = {}
        for blob in gather_bytes(buffer.getvalue()):
            with np.load(io.BytesIO(blob)) as archive:
                merged.update({name: archive[name] for name in archive.files})
        out = io.BytesIO()
        np.savez(out, **merged)
        return out.getvalue()

    def load_host_state(self, blob: bytes | None) -> None:
        if blob is None:
            raise ValueError(f"{self.spec.name} needs the host state saved with its checkpoint")
        with np.load(io.BytesIO(blob)) as archive:
            for b, host in self.blocks.items():
                if f"block{b}" not in archive.files:
                    raise ValueError(
                        f"the checkpoint's host state has no simulators of run block {b}: resume "
                        "with as many processes and devices as the run was saved with"
                    )
                host.load(archive[f"block{b}"].tobytes())
