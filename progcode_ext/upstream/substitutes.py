"""Substitutes for what upstream VDVAE needs and a machine may lack. Each is installed only where
the real thing is missing, and `install_substitutes` returns the names of those it installed.

* apex: upstream imports `apex.optimizers.FusedAdam` (apex built with CUDA extensions; not on the
  package index). Substitute: torch's AdamW, fused where possible, which is the same update rule
  (FusedAdam's adam_w_mode, the default). Its `load_state_dict` also reads apex's `*-opt.th`
  (step per param group) through the core's converter.
* mpi4py: upstream imports it even for one process. Substitute (one process only): a world of
  size 1. More processes need the real one: `pip install mpi4py mpich`, then `mpiexec -n N`.
* CUDA and NCCL (only when torch sees no CUDA device): upstream calls `.cuda()`,
  `torch.cuda.set_device` and `init_process_group('nccl')` unconditionally. Substitute: `.cuda()`
  leaves tensors and modules where they are, `set_device` does nothing, NCCL becomes gloo. Meant
  for trying a configuration on a CPU and for tests; this changes torch for the whole process.
"""
import importlib
import os
import sys
import types

import numpy as np
import torch

from vdvae.checkpoint import convert_apex_adam_state
from vdvae.distributed import match_gradient_layout
from vdvae.errors import ConfigError


class FusedAdam(torch.optim.AdamW):
    """apex's FusedAdam (adam_w_mode) as torch's AdamW."""

    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8,
                 adam_w_mode=True, weight_decay=0.0, amsgrad=False, **unused):
        if not (adam_w_mode and bias_correction and not amsgrad):
            raise ConfigError('the apex substitute implements FusedAdam(adam_w_mode=True, '
                              'bias_correction=True, amsgrad=False) only, as upstream uses it')
        params = list(params)
        tensors = [p for p in params if isinstance(p, torch.Tensor)]
        fused = bool(tensors) and len({p.device.type for p in tensors}) == 1 and \
            tensors[0].device.type in ('cpu', 'cuda') and all(p.is_floating_point() for p in tensors)
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         fused=fused or None)

    def load_state_dict(self, state_dict):
        super().load_state_dict(convert_apex_adam_state(state_dict, self))


class SingleProcessComm:
    """MPI.COMM_WORLD of a world of one process (what upstream asks of it)."""

    def Get_size(self):
        return 1

    def Get_rank(self):
        return 0

    def bcast(self, obj, root=0):
        return obj

    def allreduce(self, obj, op=None):
        return obj

    def Barrier(self):
        pass


class NumpyWithListStacking(types.ModuleType):
    """NumPy for upstream's data.py, whose cifar10 loader hands `np.vstack` a generator (an error
    since NumPy 1.24; upstream issue 19)."""

    def __init__(self):
        super().__init__('numpy')

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def vstack(arrays, *args, **kwargs):
        return np.vstack(list(arrays), *args, **kwargs)


def _importable(name):
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def _module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__progcode_substitute__ = True
    sys.modules[name] = module
    return module


def install_apex():
    if _importable('apex.optimizers'):
        return False
    if not _importable('apex'):
        _module('apex', __path__=[])
    _module('apex.optimizers', FusedAdam=FusedAdam)
    return True


def install_mpi():
    if _importable('mpi4py.MPI'):
        return False
    world = int(os.environ.get('WORLD_SIZE', os.environ.get('PMI_SIZE', '1')))
    if world > 1:
        raise RuntimeError(f'{world} processes need mpi4py, which is not installed: '
                           'pip install mpi4py mpich, then launch with mpiexec -n N')
    mpi = _module('mpi4py.MPI', COMM_WORLD=SingleProcessComm(), SUM='SUM')
    _module('mpi4py', __path__=[], MPI=mpi)
    return True


def _stay(self, *args, **kwargs):
    return self


def install_cpu():
    """`.cuda()` a no-op, `set_device` a no-op, NCCL -> gloo; only without a CUDA device."""
    if torch.cuda.is_available() or getattr(torch.distributed, '__progcode_cpu__', False):
        return False
    torch.Tensor.cuda = _stay
    torch.nn.Module.cuda = _stay
    torch.cuda.set_device = lambda device: None
    init_process_group = torch.distributed.init_process_group

    def gloo_process_group(backend=None, *args, **kwargs):
        return init_process_group('gloo' if backend in (None, 'nccl') else backend, *args, **kwargs)
    torch.distributed.init_process_group = gloo_process_group
    torch.distributed.__progcode_cpu__ = True
    return True


class DistributedDataParallel(torch.nn.parallel.DistributedDataParallel):
    """DDP as upstream calls it (`device_ids=[local_rank]`), also for a model on the CPU (which
    takes no device_ids), for progcode's models that leave parameters unused (masked decoder), and
    with the parameters laid out as their gradients come (no copy-warning from DDP)."""

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        if next(module.parameters()).device.type != 'cuda':
            device_ids = output_device = None
        kwargs.setdefault('find_unused_parameters', getattr(module, 'has_unused_parameters', False))
        match_gradient_layout(module)       # gradients come out as DDP's buckets lay them out
        super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)


def install_substitutes():
    """Install what is missing; returns the names of the substitutes installed."""
    done = [name for name, install in (('apex', install_apex), ('mpi4py', install_mpi),
                                       ('cpu', install_cpu)) if install()]
    return done
