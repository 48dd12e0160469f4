"""Which network `train.py` builds: `--model NAME` picks a factory `H -> nn.Module`.

The core registers `vdvae` (upstream's VAE). Extensions register theirs (progcode: `stage1`,
`two_stage`, `masked`). A model's `forward(x_in, x_target)` returns a dict of scalars with at least
`rate` and `distortion`, and `loss` when its objective is not the negative `elbo`. Optional hooks the
training loop calls: `after_update(stats)` after each applied update (e.g. a Lagrange multiplier's
step), `calibrate(data, preprocess_fn, device, logprint)` once before training, `visualize(...)`
for the sample grid, and the class attribute `has_unused_parameters` for DDP.
"""
from .hps import load_plugins, unknown_name_message
from .vae import VAE

MODELS = {'vdvae': VAE}


def register_model(name, factory):
    MODELS[name] = factory
    return factory


def build_model(H):
    load_plugins()
    if H.model not in MODELS:
        raise ValueError(unknown_name_message('model', H.model, MODELS))
    return MODELS[H.model](H)
