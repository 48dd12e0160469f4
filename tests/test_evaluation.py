"""Exact evaluation over a split: every example once, over any number of ranks."""
import math

import pytest
import torch

from vdvae import VAE, get_hparams
from vdvae.evaluation import evaluate, split_batches


@pytest.mark.parametrize('n,batch,world', [(10, 3, 1), (10, 3, 2), (7, 4, 3), (1, 5, 2)])
def test_split_batches_cover_every_example_once(n, batch, world):
    seen = [i for r in range(world) for b in split_batches(n, batch, r, world) for i in b]
    assert sorted(seen) == list(range(n))
    assert all(len(b) <= batch for r in range(world) for b in split_batches(n, batch, r, world))


def test_evaluate_is_the_exact_mean_of_per_example_elbos():
    H = get_hparams('cifar10', width=8, zdim=2, enc_blocks='8x1', dec_blocks='8x1', image_size=8,
                    num_mixtures=2, n_batch=3)
    model = VAE(H)
    data = torch.randint(0, 256, (7, 8, 8, 3), dtype=torch.uint8)
    prep = lambda x, device: ((x.float() - 127.5) / 64, (x.float() - 127.5) / 127.5)
    torch.manual_seed(0)
    stats = evaluate(H, model, data, prep, 'cpu')
    torch.manual_seed(0)
    batch_means = []
    for batch in (data[0:3], data[3:6], data[6:7]):         # the same batches, the same noise
        with torch.no_grad():
            batch_means.append((model(*prep(batch, 'cpu'))['elbo'].item(), batch.shape[0]))
    exact = sum(m * n for m, n in batch_means) / 7
    mean_of_batch_means = sum(m for m, _ in batch_means) / 3          # upstream's number
    assert stats['n_examples'] == 7
    assert stats['elbo'] == pytest.approx(exact, rel=1e-6)
    assert stats['elbo'] != pytest.approx(mean_of_batch_means, rel=1e-6)
    assert stats['elbo_bits_per_dim'] == pytest.approx(stats['elbo'] / math.log(2))
    assert stats['elbo'] == pytest.approx(stats['distortion'] + stats['rate'], rel=1e-6)
