"""A clean-room VDVAE core that computes what upstream `openai/vdvae` computes."""
from .hps import (HPARAMS_REGISTRY, Hyperparams, get_hparams, load_plugins, register_arguments,
                  register_preset)
from .vae import VAE

__all__ = ['HPARAMS_REGISTRY', 'Hyperparams', 'VAE', 'get_hparams', 'register_arguments',
           'register_preset']

# The one place plug-ins load (the entry-point group `vdvae.plugins`, e.g. progcode's presets, flags
# and models): importing any part of the core registers them before a flag is parsed or a model
# or dataset is looked up.
load_plugins()
