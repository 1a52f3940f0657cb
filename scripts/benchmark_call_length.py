"""Does the length of a compiled call change the training speed?

The training driver runs a logging window as compiled calls of one length (8 agent steps by
default, `driver._CALL_STEPS`). This compiles the training chunk at each `--lengths` value for
one configuration, then times `--steps` agent steps per length in interleaved rounds (so that
machine drift hits every length alike): wall ms per agent step, and the Python dispatch time of
one call.

    python scripts/benchmark_call_length.py pompc --task jax/pendulum --model-size tiny --num-seeds 2
"""

import argparse
import sys
import time

import jax

from pompc_eqx.cli import parse
from pompc_eqx.experiment import Trainer


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[8, 64])
    parser.add_argument("--steps", type=int, default=128, help="agent steps per length and round")
    parser.add_argument("--rounds", type=int, default=3)
    args, train_args = parser.parse_known_args(argv)
    cfg = parse([*train_args, "--no-aim", "--no-progress"])
    trainer = Trainer(cfg)
    state = trainer.init_state()
    calls = {}
    for n in args.lengths:
        tick = time.perf_counter()
        calls[n] = trainer.chunk_fn(n).lower(state).compile()
        print(f"chunk of {n} agent steps: compiled in {time.perf_counter() - tick:.1f} s")
    # Past the seed phase and its pretraining burst, then one call of each length (warm-up).
    while int(state.step) <= trainer.schedule.seed_steps:
        state = jax.block_until_ready(calls[max(args.lengths)](state))[0]
    for n in args.lengths:
        state = jax.block_until_ready(calls[n](state))[0]
    print(f"command: python scripts/benchmark_call_length.py {' '.join(argv)}")
    for round_ in range(args.rounds):
        for n in args.lengths:
            tick, dispatch, steps = time.perf_counter(), 0.0, 0
            while steps < args.steps:
                start = time.perf_counter()
                out = calls[n](state)
                dispatch += time.perf_counter() - start
                state, metrics, _ = jax.block_until_ready(out)
                jax.device_get(metrics)
                steps += n
            seconds = time.perf_counter() - tick
            print(
                f"round {round_}, calls of {n:3d} steps: {1000 * seconds / steps:.0f} ms/agent step, "
                f"dispatch {1000 * dispatch / (steps / n):.1f} ms/call",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
