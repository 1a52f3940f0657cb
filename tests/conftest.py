import itertools
import os

import jax
import jax.random as jr
import pytest


# MuJoCo picks its OpenGL backend when first imported: headless machines render through EGL.
if "DISPLAY" not in os.environ:
    os.environ.setdefault("MUJOCO_GL", "egl")


# Catch (B,) vs (B, 1) broadcasting bugs; beartype + jaxtyping run through the pytest plugin
# (see pyproject addopts), so a wrong shape fails loudly with the dimension's name.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the test subprocesses (CLI runs): runs that build the same
    program compile it once. The test process itself does not use it, so that every test
    compiles what it tests."""
    path = str(tmp_path_factory.mktemp("xla-cache"))
    jax.config.update("jax_compilation_cache_dir", None)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1.0"
    # cli.main turns the cache on for its process; in this process it stays off. (Imported
    # here, not at the top: the package must be imported after jaxtyping's import hook.)
    import pompc_eqx.cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pompc_eqx.cli, "use_compile_cache", lambda directory: None)
        yield path


@pytest.fixture(autouse=True)
def bounded_memory_maps():
    """The suite compiles hundreds of XLA programs in one process: drop them from memory before
    the process reaches the kernel's limit on memory mappings (see `free_compiled_programs`)."""
    yield
    from pompc_eqx.compiling import free_compiled_programs

    free_compiled_programs()


@pytest.fixture
def getkey():
    """`getkey()` returns a fresh key on every call; fixed seed, so failures replay."""
    base, counter = jr.key(0), itertools.count()
    return lambda: jr.fold_in(base, next(counter))
