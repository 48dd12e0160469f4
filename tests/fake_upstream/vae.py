"""FAKE of upstream openai/vdvae's vae.py, written for progcode's tests from
../shared/spec/vdvae_upstream.md; not upstream code.

To keep the fake small, `VAE` subclasses progcode's core `vdvae.vae.VAE`, which reproduces
upstream's VAE bit-exactly (same modules, state_dict keys, init and random draws; spec §3-§5) and
accepts upstream-style hyperparameters. Upstream defines the whole network in this file and in
vae_helpers.py; only the class name `VAE` matters to the callers.
"""
from vdvae.vae import VAE as _CoreVAE


class VAE(_CoreVAE):
    """Upstream's `VAE(H)`: forward, forward_get_latents, forward_uncond_samples and
    forward_samples_set_latents, all inherited from the core."""
