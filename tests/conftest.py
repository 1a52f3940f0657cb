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
    """One persistent XLA cache for the session and its subprocesses: tests that build the
    same program (e.g. the CLI smoke run and the resume test) compile it once."""
    path = str(tmp_path_factory.mktemp("xla-cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1.0"
    yield path


@pytest.fixture
def getkey():
    """`getkey()` returns a fresh key on every call; fixed seed, so failures replay."""
    base, counter = jr.key(0), itertools.count()
    return lambda: jr.fold_in(base, next(counter))
