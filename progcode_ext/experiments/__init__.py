"""The paper's experiments, one module each (`python -m progcode_ext.experiments.NAME`):
table1 (Table 1, Figure 1), rd_curve (Figure 2), lpips_vs_mse (Figure 4), table2 (Table 2,
Figure 3), profile (the (R_k, D_k) profile at every resolution of a trained VDVAE), and demo (all
four at toy scale on 16x16 MNIST digits, offline, on CPU). `stages` trains what they need,
`convergence` checks it converged, `figures` draws."""
