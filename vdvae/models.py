"""Which network `train.py` builds: `--model NAME` picks a factory `H -> Model`.

The core registers `vdvae` (upstream's VAE). Extensions register theirs (progcode: `stage1`,
`two_stage`, `multi_stage`, `masked`). What every network must offer is `vdvae.contract.Model`.
"""
import os

from .checkpoint import restore_params
from .contract import Model
from .errors import ConfigError
from .hps import read_hparams, unknown_name_message
from .vae import VAE

MODELS = {'vdvae': VAE}


def register_model(name, factory):
    MODELS[name] = factory
    return factory


def build_model(H):
    if H.model not in MODELS:
        raise ConfigError(unknown_name_message('model', H.model, MODELS))
    model = MODELS[H.model](H)
    if not isinstance(model, Model):            # a plug-in's bug: keep the traceback
        raise TypeError(f'--model {H.model} built a {type(model).__name__}, which is not a '
                        'vdvae.contract.Model; subclass it')
    return model


def load_trained(folder, weights=None):
    """(H, model in eval mode) of a training run's folder: its hparams.json rebuilds the model
    (with the frozen stages the run names), then `weights` (default: the folder's
    latest-model-ema.th) fill it. Every consumer of a trained run loads it here."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ConfigError(f'{folder!r} is not a folder; give the folder of a training run (it '
                          'holds hparams.json)')
    hparams = os.path.join(folder, 'hparams.json')
    if not os.path.exists(hparams):
        raise ConfigError(f'{folder!r} holds no hparams.json; give the folder of a training run')
    H = read_hparams(hparams)
    model = build_model(H)
    restore_params(model, weights or os.path.join(folder, 'latest-model-ema.th'))
    return H, model.eval()
