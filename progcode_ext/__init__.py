"""progcode: the method of Shu & Ermon (2022), "Bit Prioritization in Variational Autoencoders via
Progressive Coding", as extensions of the VDVAE core in `vdvae/`:

  lagrangian.py     Lagrange multiplier optimisation (A.5): LagrangeMultiplier, LagrangianObjective
  mean_head.py      the 1x1-conv mean head and MSE distortion (A.3)
  latent_groups.py  which latents are z_1..z_K (Section 4.1)
  stage1.py         lambda-optimal unconditional VDVAE (Section 5.1)
  masked.py         MaskedDecoder, the D_K probe and gamma-optimal training (A.2, Table 1)
  stage2.py         the conditional U-Net VDVAE (A.4)
  multi_stage.py    the chain of N stages, progressive or conventional: stage 1, lambda-optimal
                    conditional middle stages, the likelihood (Section 3, eq. 3)
  two_stage.py      its N = 2 case, the two-stage HVAE of Section 5.1 and Table 2
  register.py       flags and models, registered into the core
Presets live in `hps_overrides/`.
"""


def _import_core_package():
    """Import progcode's `vdvae` package even where a folder on sys.path holds a checkout of
    openai/vdvae named `vdvae` (as `git clone` names it; it has no __init__.py), e.g. when Python
    runs from the clone's parent folder: the path scan would take that folder for a namespace
    package `vdvae` before an editable install's finder is asked."""
    import importlib
    import os
    import sys
    if 'vdvae' in sys.modules:
        return
    clones = [p for p in sys.path if os.path.isdir(os.path.join(p or '.', 'vdvae'))
              and not os.path.exists(os.path.join(p or '.', 'vdvae', '__init__.py'))]
    if clones:
        saved = list(sys.path)
        sys.path[:] = [p for p in sys.path if p not in clones]
        try:
            importlib.import_module('vdvae')
        finally:
            sys.path[:] = saved


_import_core_package()
