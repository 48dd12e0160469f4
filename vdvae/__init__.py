"""A clean-room VDVAE core that computes what upstream `openai/vdvae` computes."""
from .hps import HPARAMS_REGISTRY, Hyperparams, get_hparams, register_arguments, register_preset
from .vae import VAE

__all__ = ['HPARAMS_REGISTRY', 'Hyperparams', 'VAE', 'get_hparams', 'register_arguments',
           'register_preset']
