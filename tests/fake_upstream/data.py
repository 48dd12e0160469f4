"""FAKE of upstream openai/vdvae's data.py, written for progcode's tests from
../shared/spec/vdvae_upstream.md; not upstream code.

cifar10 only (spec §7). Quirks kept: the training batches are stacked with `np.vstack(<generator>)`,
which raises TypeError on NumPy >= 1.24 (spec §9), and `preprocess_func` moves every batch to CUDA
with `.cuda(non_blocking=True)`. The split is scikit-learn's `train_test_split`, as upstream's; unlike
upstream, torchvision is not imported (ffhq_1024 is not served here).
"""
import os
import pickle

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset


def mkdir_p(path):
    os.makedirs(path, exist_ok=True)


def unpickle_cifar10(path):
    with open(path, 'rb') as f:
        return pickle.load(f, encoding='bytes')


def _to_nhwc(rows):
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def cifar10(data_root):
    folder = os.path.join(data_root, 'cifar-10-batches-py')
    # generator argument, as upstream: TypeError on NumPy >= 1.24 (a list would work)
    train = np.vstack(unpickle_cifar10(os.path.join(folder, f'data_batch_{i}'))[b'data']
                      for i in range(1, 6))
    test = unpickle_cifar10(os.path.join(folder, 'test_batch'))[b'data']
    train, test = _to_nhwc(train), _to_nhwc(test)
    # THE FAKE SIMPLIFIES: upstream holds out 5000; min(5000, n // 5) lets tiny test data work.
    train, valid = train_test_split(train, test_size=min(5000, len(train) // 5),
                                    random_state=11172018)
    return train, valid, test


def set_up_data(H):
    shift_loss, scale_loss = -127.5, 1. / 127.5
    if H.dataset == 'cifar10':
        train, valid, test = cifar10(H.data_root)
        H.image_size = 32
        H.image_channels = 3
        shift, scale = -120.63838, 1. / 64.16736
    else:
        raise ValueError('unknown dataset: ' + H.dataset)
    eval_data = test if H.test_eval else valid

    def preprocess_func(x):
        """DataLoader batch [uint8 NHWC] -> (network input, loss target in [-1, 1])."""
        raw = x[0].cuda(non_blocking=True).float()
        inp = (raw + shift) * scale
        target = (raw + shift_loss) * scale_loss
        return inp, target

    data_train = TensorDataset(torch.as_tensor(train))
    data_valid_or_test = TensorDataset(torch.as_tensor(eval_data))
    return H, data_train, data_valid_or_test, preprocess_func
