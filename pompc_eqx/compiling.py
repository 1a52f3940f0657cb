"""Compiling off the main thread (so interrupts and the progress display stay live), timing
each compile, and JAX's persistent compilation cache."""

import gc
import os
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

import jax


_CACHE_HITS = "/jax/compilation_cache/cache_hits"
_hits = 0
_hits_lock = threading.Lock()
_THREAD_PREFIX = "pompc-eqx: "


def _count_hits(event: str, **kwargs: Any) -> None:
    global _hits
    if event == _CACHE_HITS:
        with _hits_lock:
            _hits += 1


jax.monitoring.register_event_listener(_count_hits)


def default_cache_dir() -> pathlib.Path:
    """`$XDG_CACHE_HOME/pompc-eqx/xla` (default `~/.cache/pompc-eqx/xla`)."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "pompc-eqx" / "xla"


def use_compile_cache(directory: str | None) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache, unless `directory` is `"none"`.

    An explicit `JAX_COMPILATION_CACHE_DIR` environment variable wins over the default (not
    over an explicit `directory`). Programs that compile in under a second are not stored.

    **Returns:** the cache directory in use, or `None`.
    """
    if directory == "none":
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    path = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir()
    path = pathlib.Path(path).expanduser()
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


class Background:
    """Runs `fn()` in a daemon thread, so that the main thread stays free to handle signals
    and refresh the display while XLA compiles or a compiled call runs.

    An abandoned task does not keep the process alive (see `tasks_in_flight`).
    """

    def __init__(self, label: str, fn: Callable[[], Any]):
        self.label = label
        self.started = time.perf_counter()
        self.seconds: float | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        name = f"{_THREAD_PREFIX}{label}"
        threading.Thread(target=self._run, args=(fn,), name=name, daemon=True).start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._result = fn()
        except BaseException as err:  # re-raised in the caller's thread by `result`
            self._error = err
        self.seconds = time.perf_counter() - self.started
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; whether the task is done."""
        return self._done.wait(timeout)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def result(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


class Compilation(Background):
    """Traces (`lower()`) and compiles in the background; `result()` is the compiled function."""

    def __init__(self, label: str, lower: Callable[[], Any]):
        self.from_cache = False
        super().__init__(label, lambda: self._compile(lower))

    def _compile(self, lower: Callable[[], Any]) -> Callable:
        lowered = lower()
        before = _hits
        compiled = lowered.compile()
        self.from_cache = _hits > before
        return compiled

    def report(self) -> str:
        """`compiled in N s` or `loaded from the compile cache in N s`."""
        how = "loaded from the compile cache" if self.from_cache else "compiled"
        return f"{self.label}: {how} in {self.seconds:.1f} s"


def _memory_maps() -> tuple[int, int]:
    """This process's memory mappings and the kernel's limit on them ((0, 1) off Linux)."""
    try:
        with open("/proc/self/maps") as maps, open("/proc/sys/vm/max_map_count") as limit:
            return sum(1 for _ in maps), int(limit.read())
    except OSError:
        return 0, 1


def free_compiled_programs(share: float = 0.3) -> bool:
    """Drop JAX's in-memory compiled programs if this process's memory mappings exceed `share`
    of the kernel's limit (`vm.max_map_count`, 65,530 by default on Linux).

    An XLA:CPU program keeps each of its kernels in mappings of its own (a training chunk of
    the tiny model: about 3,500) and JAX keeps every program it compiled; a process that
    compiles a few dozen of them reaches the limit, and XLA then crashes (SIGSEGV) inside its
    next compile. Dropped programs are compiled again (or loaded from the persistent cache)
    when next called.

    **Returns:** whether programs were dropped.
    """
    count, limit = _memory_maps()
    if count <= share * limit:
        return False
    jax.clear_caches()
    gc.collect()
    return True


def tasks_in_flight() -> bool:
    """Whether a background task still runs (the process then ends with `os._exit`)."""
    return any(t.is_alive() and t.name.startswith(_THREAD_PREFIX) for t in threading.enumerate())


def _largest_divisor(n: int, at_most: int | float) -> int:
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= max(1, at_most))


class ChunkPlan:
    """The length (in agent steps) of each compiled call of a run.

    Results do not depend on how a window is split into calls (the scan body is the same and
    every key lives in the state), so the length is picked for responsiveness only: interrupts
    and the progress display wait for a running call. One length serves the whole run, the
    largest divisor of the window up to `first_steps`: longer calls save little time (per-call
    overhead is negligible; see docs/design.md) but cost a second compile. Only when two calls in
    a row take over twice `target_seconds` (a large model on a slow machine) is a shorter length
    compiled: one slow call can be a process that was suspended (Ctrl-Z, a laptop's sleep) or
    briefly starved, and must not shrink the rest of the run. Calls are aligned to multiples of
    their length, so window boundaries (logging, evaluation, checkpoints) always fall between
    calls.
    """

    def __init__(self, window: int, first_steps: int, target_seconds: float):
        """**Arguments:**

        - `window`: the logging window in agent steps.
        - `first_steps`: upper bound of the call length.
        - `target_seconds`: upper bound of a call's wall time, once measured.
        """
        self.length = _largest_divisor(window, first_steps)
        self._target = target_seconds
        self._called: set[int] = set()
        self._slow_per_step: float | None = None  # the previous call's, if it was too slow

    def next_length(self, step: int) -> int:
        """The length of the next call from `step`. A step off the grid (after a resume whose
        window changed, or after a shorter length was chosen) is realigned first."""
        return self.length - step % self.length

    def measured(self, num_steps: int, seconds: float) -> None:
        """Record the wall time of a call with updates; may choose a shorter length.

        The first call of each length is not used (it pays for loading the executable).
        """
        if num_steps not in self._called:
            self._called.add(num_steps)
            return
        if seconds <= 2 * self._target or num_steps == 1:
            self._slow_per_step = None
            return
        per_step = seconds / num_steps
        if self._slow_per_step is None:
            self._slow_per_step = per_step  # wait for a second slow call in a row
            return
        per_step = min(per_step, self._slow_per_step)
        self._slow_per_step = None
        self.length = _largest_divisor(self.length, self._target / per_step)
