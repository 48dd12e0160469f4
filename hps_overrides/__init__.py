"""progcode's presets, registered into the VDVAE core's registry (loaded through the
`vdvae.plugins` entry point, so `--hps svhn` works everywhere the core parses flags)."""
from . import paper  # noqa: F401
