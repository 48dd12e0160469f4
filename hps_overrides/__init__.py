"""progcode's datasets, presets, flags and models, registered into the VDVAE core's registries:
the one place progcode reaches the core (loaded through the `vdvae.plugins` entry point, so
`--hps svhn_stage1` works wherever the core parses flags). Datasets: progcode_ext/datasets.py;
flags and models: progcode_ext/register.py; presets: the paper's (paper.py), the progressive
method's (progressive.py) and the offline toy's (toy.py)."""
import progcode_ext.datasets  # noqa: F401  (datasets)
import progcode_ext.register  # noqa: F401  (flags and models)

from . import paper, toy, progressive  # noqa: F401  (presets; progressive.py extends both)
