"""Train PO-MPC / TD-MPC2 / BMPC on one task with N vmapped seeds.

python scripts/train.py PRESET [OPTIONS]     # PRESET: tdmpc2 | bmpc | pompc
python scripts/train.py pompc --task dmc/cartpole-swingup --num-seeds 3 --model-size 1m
python scripts/train.py pompc --help         # every option, with its default
python scripts/train.py --resume RUN_DIR     # continue a run (after Ctrl-C or preemption too)

Ctrl-C, SIGTERM and SIGUSR1 stop a run with a checkpoint and exit with 130, 143 and 138.
"""

import sys

from pompc_eqx.cli import main


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
