"""progcode: the method of Shu & Ermon (2022), "Bit Prioritization in Variational Autoencoders via
Progressive Coding", as extensions of the VDVAE core in `vdvae/`. Its presets live in
`hps_overrides/`."""
import hps_overrides  # noqa: F401  (registers the paper's presets and datasets)
