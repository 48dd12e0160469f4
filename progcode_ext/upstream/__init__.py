"""progcode inside a user's own checkout of openai/vdvae (upstream's code, unedited).

    python -m progcode_ext.upstream --vdvae_root PATH --hps svhn_stage1 --distortion_target 0.0032
    mpiexec -n 8 python -m progcode_ext.upstream --vdvae_root PATH --hps svhn_stage1

`install(root)` imports the checkout's modules by name and, without editing any file:
* registers progcode's presets in upstream's `HPARAMS_REGISTRY` and its flags in upstream's parser
  (`add_vae_arguments`);
* puts a factory where upstream builds `VAE(H)`: `--model stage1 | two_stage | multi_stage |
  masked` builds
  progcode's network with upstream's model contract (`interface.py`); `--model vdvae` (default)
  keeps the checkout's own VAE;
* serves progcode's datasets (svhn, celeba64, lsun_bedroom64, imagefolder) through upstream's
  `set_up_data`;
* replaces `update_ema`, `save_model` and `linear_warmup` in `train_helpers` (fixes listed in
  `plugin.py`), and provides substitutes for what upstream needs and a machine may lack
  (`substitutes.py`: apex, mpi4py, CUDA/NCCL).
Then upstream's own `train.main()` runs. `patcher.py` adds the same `install` call as a marked
two-line hook at the top of a checkout's `train.py`, so that plain `python train.py` uses it.
"""
from .checkout import CheckoutError, recognise
from .plugin import install

__all__ = ['CheckoutError', 'install', 'recognise']
