"""House rules of the package: every Equinox module is abstract or final, files stay small."""

import abc
import importlib
import inspect
import pathlib
import pkgutil

import equinox as eqx
import pytest

import pompc_eqx


PACKAGE = pathlib.Path(pompc_eqx.__file__).parent
MAX_LINES = 400


def _modules():
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="pompc_eqx."):
        if info.name.startswith("pompc_eqx.analysis"):
            continue  # result tables and plots: not part of the importable core
        yield importlib.import_module(info.name)


def _module_classes() -> list[type]:
    found = {}
    for module in _modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, eqx.Module) and cls.__module__.startswith("pompc_eqx"):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


def _is_abstract(cls: type) -> bool:
    """Abstract methods, abstract attributes (`AbstractVar`) or abstract class variables left."""
    return bool(
        getattr(cls, "__abstractmethods__", None)
        or getattr(cls, "__abstractvars__", None)
        or getattr(cls, "__abstractclassvars__", None)
    )


def test_every_module_is_abstract_or_final():
    """Kidger's rule (style guide): a module is abstract (named Abstract*, never instantiated)
    or final (concrete, with no subclass in the package)."""
    classes = _module_classes()
    assert len(classes) > 20, "walked too few modules: the check would be empty"
    for cls in classes:
        subclasses = [c for c in classes if c is not cls and issubclass(c, cls)]
        if _is_abstract(cls):
            assert cls.__name__.startswith("Abstract"), f"{cls} is abstract but not named Abstract*"
            assert subclasses, f"{cls} is abstract with no final implementing it"
        else:
            assert not subclasses, f"{cls} is concrete but subclassed by {subclasses}"
            assert not cls.__name__.startswith("Abstract"), f"{cls} is named Abstract* but concrete"


def test_abstract_check_sees_abstract_classes():
    from pompc_eqx.objectives import AbstractObjectiveWithoutCritic, AbstractPolicyObjective, MaxQ
    from pompc_eqx.priors import AbstractPrior, LearnedPrior

    assert _is_abstract(AbstractPolicyObjective) and _is_abstract(AbstractObjectiveWithoutCritic)
    assert _is_abstract(AbstractPrior) and not _is_abstract(LearnedPrior) and not _is_abstract(MaxQ)
    with pytest.raises(TypeError):
        AbstractPrior()


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_no_package_file_is_over_the_line_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{path.relative_to(PACKAGE.parent)} has {lines} lines (limit {MAX_LINES})"
    )


def test_abc_is_how_abstract_methods_are_declared():
    # Guards the check above: equinox modules record abstract methods like any ABC.
    class AbstractThing(eqx.Module):
        @abc.abstractmethod
        def f(self): ...

    assert _is_abstract(AbstractThing)
