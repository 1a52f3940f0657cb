"""Compiled programs and the kernel's limit on memory mappings."""

import pathlib

import jax
import jax.numpy as jnp
import pytest

from pompc_eqx.compiling import _memory_maps, free_compiled_programs


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="Linux /proc only")
def test_free_compiled_programs_releases_the_mappings_of_dropped_programs():
    programs = [jax.jit(lambda x, k=k: jnp.sin(x * k) @ x.T) for k in range(40)]
    before = _memory_maps()[0]
    for f in programs:
        f(jnp.ones((8, 8))).block_until_ready()
    compiled = _memory_maps()[0]
    assert compiled > before, "each compiled program maps its kernels"
    assert not free_compiled_programs(share=1.0), "far below the limit: nothing is dropped"
    assert free_compiled_programs(share=0.0)
    assert _memory_maps()[0] < compiled
    assert float(programs[0](jnp.ones((8, 8)))[0, 0]) == 0.0, "a dropped program compiles again"
