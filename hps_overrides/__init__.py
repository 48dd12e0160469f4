"""progcode's presets, flags and models, registered into the VDVAE core's registries (loaded
through the `vdvae.plugins` entry point, so `--hps svhn_stage1` works wherever the core parses
flags)."""
import progcode_ext.register  # noqa: F401  (flags and models)

from . import paper, progressive  # noqa: F401  (presets)
