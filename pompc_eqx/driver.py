"""The loop over compiled calls of a run: call lengths, logging windows, evaluation,
checkpoints, and stopping cleanly on a signal (see `experiment.run`, which sets it up)."""

import functools
import math
import pathlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from .agent import metrics_skipped_in_pretraining
from .checkpoint import latest_checkpoint, save_checkpoint
from .compiling import Background, ChunkPlan, Compilation
from .config import TrainConfig, config_dict
from .console import ConsoleLogger
from .loggers import Loggers
from .loop import LoopState
from .metrics import NonFiniteError, check_finite, window_rows
from .signals import Interrupted, StopRequest


if TYPE_CHECKING:
    from .experiment import Trainer


# Compiled calls last about this long at most (interrupts and the progress bar wait for them).
_TARGET_CALL_SECONDS = 10.0
# After a signal, a running call gets this long to finish (its state cannot be saved before).
_GRACE_SECONDS = 20.0
# Agent steps of the first compiled call, before the step time is known (a divisor of the window).
_FIRST_CALL_STEPS = 8


def _window(cfg: TrainConfig) -> int:
    """The logging window: every evaluation, checkpoint and the end fall on its multiples."""
    return math.gcd(
        cfg.chunk_steps, cfg.eval_every, cfg.checkpoint_every or cfg.eval_every, cfg.steps
    )


class _Stopped(Exception):
    """A signal arrived while the main thread waited for a background task."""


def _wait(
    task: Background, stop: StopRequest, grace: float = 0.0, show: Callable | None = None
) -> Any:
    """The task's result. Calls `show(seconds waited)` about every second; raises `_Stopped`
    `grace` seconds after a signal if the task has not finished by then."""
    signalled = None
    while not task.wait(1.0):
        if stop.signum is not None:
            signalled = signalled or time.perf_counter()
            if time.perf_counter() - signalled >= grace:
                raise _Stopped
        if show is not None:
            show(task.elapsed())
    return task.result()


def _run_call(fn: Callable, state: LoopState) -> Any:
    return jax.block_until_ready(fn(state))


def _compiled(compilation: Compilation, console: ConsoleLogger, stop: StopRequest) -> Callable:
    """The compiled function, with the compile phase on the console."""
    fn = _wait(compilation, stop, show=lambda t: console.compiling(compilation.label, t))
    console.status(None)
    console.message(compilation.report())
    return fn


def train_loop(
    trainer: "Trainer",
    state: LoopState,
    start: int,
    run_dir: pathlib.Path,
    outputs: Loggers,
    console: ConsoleLogger,
    stop: StopRequest,
    eval_missing: bool,
) -> np.ndarray | None:
    """Run `trainer` from `state` at agent step `start` to the end, or to the first signal.

    **Arguments:**

    - `trainer`, `state`, `start`: what to train, from where.
    - `run_dir`: the run directory (checkpoints go to its `checkpoints/`).
    - `outputs`, `console`: where rows and messages go.
    - `stop`: set by a signal; the loop then checkpoints and raises `Interrupted`.
    - `eval_missing`: `start` is an evaluation step whose evaluation was interrupted.

    **Returns:** the last evaluation's returns (seed, episode), or `None`.
    """
    cfg, seeds, ckpt_dir = trainer.cfg, trainer.seeds, run_dir / "checkpoints"
    window = _window(cfg)
    skipped_in_burst = metrics_skipped_in_pretraining(trainer.agent_cfg)

    def compile_chunk(num_steps: int, state: LoopState, trace_here: bool) -> Compilation:
        console.compiling(f"chunk of {num_steps} agent steps", 0.0)
        return trainer.compile_chunk(num_steps, state, trace_here)

    plan = ChunkPlan(compile_chunk, window, _FIRST_CALL_STEPS, _TARGET_CALL_SECONDS)
    evaluate_fn: Callable | None = None
    returns = None
    saved_step = start if start else None
    pieces: list[dict[str, np.ndarray]] = []
    lost, length = False, 0
    seconds = 0.0
    step = start

    def save() -> None:
        nonlocal saved_step
        save_checkpoint(
            ckpt_dir,
            step,
            state,
            metadata={"config": config_dict(cfg), "step": step},
            host_state=trainer.env.save_host_state(),
        )
        saved_step = step

    def evaluate() -> np.ndarray:
        nonlocal evaluate_fn
        if evaluate_fn is None:
            console.compiling("evaluation", 0.0)
            evaluate_fn = _compiled(trainer.compile_evaluate(state), console, stop)
        task = Background("evaluation", functools.partial(trainer.evaluate, state, evaluate_fn))
        returns = _wait(task, stop, show=lambda t: console.status(f"evaluating … {t:.0f} s"))
        console.status(None)
        outputs.log_eval(returns, step)
        return returns

    try:
        if eval_missing:
            returns = evaluate()
        while step < cfg.steps and stop.signum is None:
            boundary = min((step // window + 1) * window, cfg.steps)
            length, compilation = plan.next_call(step, boundary, state)
            if compilation is not None:
                plan.ready[length] = _compiled(compilation, console, stop)
                continue
            if step < trainer.schedule.seed_steps <= step + length:
                console.message(f"pretraining: {trainer.schedule.seed_steps} updates")
            # Blocking in the thread: dispatch is asynchronous, and the wait must be interruptible.
            fn = functools.partial(_run_call, plan.ready[length], state)
            call = Background(f"steps {step}..{step + length}", fn)
            lost = True  # the call consumes (donates) the state
            state, metrics, finite = _wait(call, stop, grace=_GRACE_SECONDS)
            lost = False
            metrics = jax.device_get(metrics)
            elapsed = call.seconds
            check_finite(metrics, step, seeds, skipped_in_burst)
            finite = np.asarray(finite)
            if not finite.all():
                raise NonFiniteError(
                    f"non-finite parameters for seed {seeds[int(np.argmin(finite))]} between "
                    f"agent steps {step} and {step + length}"
                )
            step += length
            pieces.append(metrics)
            seconds += elapsed
            console.advance(step)
            # Random steps are much faster than steps with updates; after a signal, compile nothing.
            if step - length > trainer.schedule.seed_steps and stop.signum is None:
                plan.measured(length, elapsed, state)
            if step < boundary:
                continue
            window_metrics = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
            env_step = step * trainer.spec.action_repeat
            outputs.log_train(window_rows(window_metrics, step, env_step, seeds, seconds), step)
            pieces, seconds = [], 0.0
            if step % cfg.eval_every == 0 or step == cfg.steps:
                returns = evaluate()
            if step % (cfg.checkpoint_every or cfg.eval_every) == 0 or step == cfg.steps:
                save()
    except _Stopped:
        pass  # handled below, with the state as it is
    except NonFiniteError as err:
        last = latest_checkpoint(ckpt_dir)
        raise NonFiniteError(
            f"{err}; stopping. The last good checkpoint is {last or 'none (no checkpoint yet)'}"
        ) from None
    if stop.signum is None:
        return returns
    resume = f"continue with: python scripts/train.py --resume {run_dir}"
    if lost:
        last = latest_checkpoint(ckpt_dir)
        where = f"from {last.name}" if last else "from the start (no checkpoint yet)"
        raise Interrupted(
            f"interrupted during agent steps {step}..{step + length} (a call that did not end "
            f"within {_GRACE_SECONDS:.0f} s); {resume} ({where})",
            stop.signum,
        )
    if saved_step != step:
        save()
    raise Interrupted(f"interrupted at agent step {step}; {resume}", stop.signum)
