"""The loop over compiled calls of a run: call lengths, logging windows, evaluation,
checkpoints, and stopping cleanly on a signal (see `experiment.run`, which sets it up)."""

import functools
import math
import pathlib
import signal
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
from .distributed import any_process, gather, is_main
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
# Agent steps of a compiled call, unless they take too long (a divisor of the window).
_CALL_STEPS = 8


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
    - `eval_missing`: `start` is an evaluation step not evaluated yet (agent step 0 with
        `--eval-at-start`, or an evaluation cut short by an interrupt).

    **Returns:** the last evaluation's returns (seed, episode), or `None`.
    """
    cfg, seeds, labels = trainer.cfg, trainer.seeds, trainer.labels
    ckpt_dir = run_dir / "checkpoints"
    window = _window(cfg)
    skipped_in_burst = metrics_skipped_in_pretraining(trainer.agent_cfg)

    plan = ChunkPlan(window, _CALL_STEPS, _TARGET_CALL_SECONDS)
    chunks: dict[int, Callable] = {}
    evaluators: dict[bool, Callable] = {}  # compiled when first needed
    returns = None
    saved_step = start if start else None
    pieces: list[dict[str, np.ndarray]] = []
    lost, length = False, 0
    seconds = 0.0
    step = start
    stopping = False  # a signal reached some process (all of them stop at the same step)

    def save() -> None:
        nonlocal saved_step
        # With several processes, every one takes part in both (they are collectives).
        whole, host_state = gather(state), trainer.env.save_host_state()
        if is_main():
            save_checkpoint(
                ckpt_dir,
                step,
                whole,
                metadata={"config": config_dict(cfg), "step": step},
                host_state=host_state,
            )
        saved_step = step

    def evaluate_with(policy_only: bool) -> np.ndarray:
        if policy_only not in evaluators:
            compilation = trainer.compile_evaluate(state, policy_only=policy_only)
            console.compiling(compilation.label, 0.0)
            evaluators[policy_only] = _compiled(compilation, console, stop)
        fn = functools.partial(trainer.evaluate, state, evaluators[policy_only])
        task = Background("evaluation", fn)
        returns = _wait(task, stop, show=lambda t: console.status(f"evaluating … {t:.0f} s"))
        console.status(None)
        outputs.log_eval(returns, step, policy_only=policy_only)
        return returns

    def evaluate() -> np.ndarray:
        if cfg.eval_policy:  # first: rows in eval.csv then mean that both evaluations are done
            evaluate_with(policy_only=True)
        return evaluate_with(policy_only=False)

    try:
        if eval_missing:
            returns = evaluate()
        while step < cfg.steps:
            stopping = any_process(stop.signum is not None)
            if stopping:
                break
            length = plan.next_length(step)
            if length not in chunks:
                console.compiling(f"chunk of {length} agent steps", 0.0)
                chunks[length] = _compiled(trainer.compile_chunk(length, state), console, stop)
            if step < trainer.schedule.seed_steps <= step + length:
                console.message(f"pretraining: {trainer.schedule.seed_steps} updates")
            # Blocking in the thread: dispatch is asynchronous, and the wait must be interruptible.
            fn = functools.partial(_run_call, chunks[length], state)
            call = Background(f"steps {step}..{step + length}", fn)
            lost = True  # the call consumes (donates) the state
            state, metrics, finite = _wait(call, stop, grace=_GRACE_SECONDS)
            lost = False
            metrics = gather(metrics)
            elapsed = call.seconds
            check_finite(metrics, step, labels, skipped_in_burst)
            finite = np.asarray(gather(finite))
            if not finite.all():
                raise NonFiniteError(
                    f"non-finite parameters for seed {labels[int(np.argmin(finite))]} between "
                    f"agent steps {step} and {step + length}"
                )
            step += length
            pieces.append(metrics)
            seconds += elapsed
            console.advance(step)
            # Random steps are much faster than steps with updates.
            if step - length > trainer.schedule.seed_steps:
                plan.measured(length, elapsed)
            if step % window:
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
    if stop.signum is None and not stopping:
        return returns
    signum = stop.signum or signal.SIGTERM  # stopped because another process was signalled
    resume = f"continue with: python scripts/train.py --resume {run_dir}"
    if lost:
        last = latest_checkpoint(ckpt_dir)
        where = f"from {last.name}" if last else "from the start (no checkpoint yet)"
        raise Interrupted(
            f"interrupted during agent steps {step}..{step + length} (a call that did not end "
            f"within {_GRACE_SECONDS:.0f} s); {resume} ({where})",
            signum,
        )
    if saved_step != step:
        save()
    raise Interrupted(f"interrupted at agent step {step}; {resume}", signum)
