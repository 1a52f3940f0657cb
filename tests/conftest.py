import itertools

import jax
import jax.random as jr
import pytest


# Catch (B,) vs (B, 1) broadcasting bugs; beartype + jaxtyping run through the pytest plugin
# (see pyproject addopts), so a wrong shape fails loudly with the dimension's name.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """`getkey()` returns a fresh key on every call; fixed seed, so failures replay."""
    base, counter = jr.key(0), itertools.count()
    return lambda: jr.fold_in(base, next(counter))
