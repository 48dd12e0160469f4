"""The paper's experiments, one module each (`python -m progcode_ext.experiments.NAME`): table1
(Table 1, Figure 1), rd_curve (Figure 2), lpips_vs_mse (Figure 4), table2 (Table 2, Figure 3),
stages (two against N stages), profile (the (R_k, D_k) profile of a trained VDVAE) and demo (the
paper's four at toy scale on 16x16 MNIST digits, offline, on CPU). Each has `plan(cfg)` (the
training runs it needs), `report(cfg)` (its report from the finished runs) and `run(cfg)` (both).
table2 and stages are two plans of one comparison of chains of trained models (`chains`). Shared:
`cli` (flags, entry point), `runs` (training), `evaluate` (finished runs), `convergence` and
`verdicts` (what a claim may conclude), `report`, `figures`, `machine`."""
