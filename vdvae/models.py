"""Which network `train.py` builds: `--model NAME` picks a factory `H -> Model`.

The core registers `vdvae` (upstream's VAE). Extensions register theirs (progcode: `stage1`,
`two_stage`, `multi_stage`, `masked`). What every network must offer is `vdvae.contract.Model`.
"""
from .contract import Model
from .errors import ConfigError
from .hps import unknown_name_message
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
