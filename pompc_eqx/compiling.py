"""Compiling off the main thread (so interrupts and the progress display stay live), timing
each compile, and JAX's persistent compilation cache."""

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
    """Traces (`lower()`) and compiles in the background; `result()` is the compiled function.

    With `trace_here`, tracing runs in the caller's thread: needed when the caller goes on
    using (and donating) the arguments that `lower` reads. XLA's compile, the slow part,
    always runs in the background.
    """

    def __init__(self, label: str, lower: Callable[[], Any], trace_here: bool = False):
        self.from_cache = False
        if trace_here:
            lowered = lower()
            lower = lambda: lowered
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


def tasks_in_flight() -> bool:
    """Whether a background task still runs (the process then ends with `os._exit`)."""
    return any(t.is_alive() and t.name.startswith(_THREAD_PREFIX) for t in threading.enumerate())


def _largest_divisor(n: int, at_most: int | float) -> int:
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= max(1, at_most))


class ChunkPlan:
    """Which compiled chunk length runs next, so that each call lasts about `target_seconds`.

    Results do not depend on how a window is split into calls (the scan body is the same and
    every key lives in the state), so lengths are picked for responsiveness only: the first
    call is short (`first_steps`, a divisor of the window); once its wall time is known, the
    largest window divisor that fits `target_seconds` is compiled in the background while
    short calls go on. Calls are aligned to multiples of their length, so window boundaries
    (logging, evaluation, checkpoints) always fall between calls.
    """

    def __init__(
        self, compile_chunk: Callable, window: int, first_steps: int, target_seconds: float
    ):
        """**Arguments:**

        - `compile_chunk`: `(num_steps, state, trace_here) -> Compilation`; `trace_here` is
            true for a compile that runs while the caller goes on with `state`.
        - `window`: the logging window in agent steps.
        - `first_steps`: upper bound of the first call's length.
        - `target_seconds`: upper bound of a call's wall time, once measured.
        """
        self._compile_chunk = compile_chunk
        self._window = window
        self._target = target_seconds
        self.base = _largest_divisor(window, first_steps)
        self.ready: dict[int, Callable] = {}
        self.pending: tuple[int, Compilation] | None = None
        self._called: set[int] = set()
        self._too_long: set[int] = set()

    def next_call(self, step: int, boundary: int, state: Any) -> tuple[int, Compilation | None]:
        """The length of the next call from `step` (never past `boundary`), and the compile to
        wait for before it (`None` if that length is ready)."""
        if self.pending is not None and self.pending[1].done():
            finished, self.pending = self.pending, None
            return finished
        fits = [n for n in self.ready if step % n == 0 and step + n <= boundary]
        if fits:
            return max(fits), None
        # Off the grid only after a resume whose window changed (or a smaller base): realign.
        length = self.base - step % self.base if step % self.base else self.base
        if self.pending is not None and self.pending[0] == length:
            needed, self.pending = self.pending, None
            return needed
        return length, self._compile_chunk(length, state, False)

    def measured(self, num_steps: int, seconds: float, state: Any) -> None:
        """Record the wall time of a call with updates; may start compiling a chunk length
        that fits `target_seconds` better (for arguments like `state`).

        The first call of each length is not used (it pays for loading the executable). A
        length whose calls take over twice the target is dropped for shorter calls (down to
        one agent step).
        """
        if num_steps not in self._called:
            self._called.add(num_steps)
            return
        if self.pending is not None or seconds <= 0:
            return
        if seconds > 2 * self._target and num_steps > 1:
            del self.ready[num_steps]
            self._too_long.add(num_steps)
            if num_steps == self.base:  # even the first length is too long: a shorter one
                self.base = _largest_divisor(self.base, self._target * num_steps / seconds)
                self.pending = (self.base, self._compile_chunk(self.base, state, True))
                return
        longest = _largest_divisor(self._window, self._target * num_steps / seconds)
        if longest >= 4 * max(self.ready) and longest not in self._too_long | set(self.ready):
            self.pending = (longest, self._compile_chunk(longest, state, True))
