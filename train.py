"""Upstream's entry point: `python train.py --hps PRESET [flags]` (the code is vdvae/train.py)."""
import sys

from vdvae.train import main

if __name__ == '__main__':
    sys.exit(main())
