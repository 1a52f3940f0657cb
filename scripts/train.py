"""Train PO-MPC / TD-MPC2 / BMPC on one task with N vmapped seeds.

python scripts/train.py PRESET [OPTIONS]     # PRESET: tdmpc2 | bmpc | pompc
python scripts/train.py pompc --task dmc/cartpole-swingup --num-seeds 3 --model-size 1m
python scripts/train.py pompc --help         # every option, with its default
"""

import sys

from pompc_eqx.cli import main


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
