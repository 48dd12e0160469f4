"""progcode: the method of Shu & Ermon (2022), "Bit Prioritization in Variational Autoencoders via
Progressive Coding", as extensions of the VDVAE core in `vdvae/`:

  lagrangian.py     Lagrange multiplier optimisation (A.5): LagrangeMultiplier, LagrangianObjective
  mean_head.py      the 1x1-conv mean head and MSE distortion (A.3)
  latent_groups.py  which latents are z_1..z_K (Section 4.1)
  stage1.py         lambda-optimal unconditional VDVAE (Section 5.1)
  masked.py         MaskedDecoder, the D_K probe and gamma-optimal training (A.2, Table 1)
  stage2.py         the conditional U-Net VDVAE (A.4)
  two_stage.py      the full two-stage HVAE, progressive or conventional (Section 5.1, Table 2)
  register.py       flags and models, registered into the core
Presets live in `hps_overrides/`.
"""
