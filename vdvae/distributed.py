"""Processes and devices: one process, `torchrun`, or `mpiexec` (upstream's launcher).

One process needs nothing distributed. Under torchrun the usual RANK / WORLD_SIZE / LOCAL_RANK
variables are set. Under mpiexec, mpi4py (imported only then) gives the rank and world size, and
rank 0's host name becomes MASTER_ADDR, as upstream does. NCCL on CUDA, gloo on CPU.
"""
import copy
import datetime
import os
import re
import socket
import sys
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .contract import training_loss

_MPI_SIZE_VARIABLES = ('OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'PMIX_SIZE', 'MV2_COMM_WORLD_SIZE')


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self):
        return self.rank == 0


def _launched_by_mpi():
    return any(int(os.environ.get(v, '1')) > 1 for v in _MPI_SIZE_VARIABLES)


class LostRankError(RuntimeError):
    """A collective failed: another rank died (its connections closed) or stopped answering for
    the collective timeout. The message names the rank where it can."""


def setup_distributed(port=29500, device=None, timeout=None):
    """Detect the launcher, start the process group if there is more than one process, and pick
    this process's device (cuda:local_rank when CUDA is available, unless `device` says).
    `timeout` (seconds; None: torch's default) bounds every collective, so that a rank whose peer
    hangs (a dead node that closes no connection) stops instead of waiting for it."""
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ:           # torchrun
        rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
        local_rank = int(os.environ.get('LOCAL_RANK', rank))
    elif _launched_by_mpi():
        from mpi4py import MPI                                         # only when launched so
        comm = MPI.COMM_WORLD
        rank, world = comm.Get_rank(), comm.Get_size()
        per_node = int(os.environ.get('OMPI_COMM_WORLD_LOCAL_SIZE', 0)) or min(world, 8)
        local_rank = int(os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK', rank % per_node))
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_PORT=str(port),
                          MASTER_ADDR=comm.bcast(socket.gethostname(), root=0))
    else:
        rank, world, local_rank = 0, 1, 0
    if device is None:
        device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
        os.environ.setdefault('MASTER_PORT', str(port))
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', rank=rank,
                                world_size=world, timeout=timeout and datetime.timedelta(
                                    seconds=timeout))
    return Dist(rank, world, local_rank, device)


def all_reduce_mean(stats, device):
    """Average a dict of floats over ranks in one collective (identity for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(stats)
    keys = list(stats)          # the same order on every rank: the same code built the dict
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def all_reduce_sum(values, device):
    """Sum a list of floats over ranks (identity for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_from_main(obj):
    """Rank 0's `obj` on every rank (a barrier as well)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave_together():
    """A barrier at the end of a run, before any rank tears its process group down: a rank whose
    peer destroys the group while it still finishes its last exchange can abort at exit (SIGABRT,
    "terminate called without an active exception"; seen under torchrun with gloo)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# A rank lost

def is_collective_failure(error):
    """Whether `error` is a collective of a started multi-process group that failed because a
    peer went away: torch's DistError kinds (NCCL), or gloo's transport errors (plain
    RuntimeErrors naming gloo's source file: "Connection closed by peer", "Connection reset by
    peer", "Timed out waiting ...")."""
    started = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return started and (isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and '/gloo/transport/' in str(error)))


def rank_processes():
    """'pid@host' of every rank, in rank order (a collective). Logged at the start, so that a
    launcher's report of a dead process ("PID 4321 RUNNING AT node7", mpiexec) names its rank."""
    me = f'{os.getpid()}@{socket.gethostname()}'
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [me]
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, me)
    return everyone


def lost_rank_error(error, timeout):
    """The LostRankError for a failed collective of this rank: which rank it lost (in a world of
    two, the other one; otherwise the backend names the peer's address) and why."""
    rank, world = dist.get_rank(), dist.get_world_size()
    lost = f'rank {1 - rank}' if world == 2 else 'another rank'
    return LostRankError(
        f'rank {rank} of {world} lost contact with {lost} ({_backend_reason(error)}): it died, or '
        f'did not answer within --collective_timeout {timeout:g} s')


def _backend_reason(error):
    """The backend's first sentence without its source location, e.g. "Connection closed by peer
    [10.0.0.2]:4321"."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r'^\[[^\]]*\.(cc|cpp|h):\d+\]\s*', '', text)
    return re.split(r'\.\s', text, maxsplit=1)[0].rstrip('.')


def exit_at_once(status):
    """End the process with `status` now, after flushing its output. After a lost rank the process
    group's threads are left mid-operation, and destroying them at the interpreter's normal exit
    can abort the process (SIGABRT, "terminate called without an active exception") instead of
    exiting with `status`."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


# ------------------------------------------------------------------------------------------------
# Gradient layout for DDP

def match_gradient_layout(model, inputs=None):
    """Give each parameter the strides autograd gives its gradient, where the two differ only along
    dimensions of size 1: the same memory, so no value moves and no result changes. DDP's bucket
    views copy the parameters' strides and it warns ("Grad strides do not match bucket view
    strides") when a gradient's differ; call this before DDP wraps the model.

    Along size-1 dimensions a gradient's strides are up to the kernel that computes it: on the CPU
    mkldnn gives the weights of 1x1 and one-input-channel convolutions channels-last strides while
    slow_conv2d (one thread, batch < 16) follows the weight's, broadcast reductions (gain, bias,
    bias_xs) give contiguous ones, and on CUDA cuDNN goes by the input's and the weight's layout.
    So they are measured: one forward and backward of a copy of the model, on `inputs` (positional
    arguments of `forward`; by default random NHWC images as training's: H.n_batch of them, under
    H.amp's autocast). The random number generators are left as they were. Returns the names of the
    parameters given new strides.

    No work is saved: with `zero_grad(set_to_none=True)` DDP copies every fresh gradient into its
    bucket anyway, and the same kernels run either way (BENCHMARKS.md, "DDP gradient layout")."""
    strides = _gradient_strides(model, inputs)
    if strides is None:
        return []
    changed = []
    for name, p in model.named_parameters():
        want = strides.get(name)
        if want is not None and want != p.stride() and _same_memory(p.shape, p.stride(), want):
            p.data = p.data.as_strided(p.shape, want, p.storage_offset())
            changed.append(name)
    return changed


def _same_memory(shape, strides, other):
    """Whether two stride tuples address the same elements (a size-1 dimension's stride is never
    used to step)."""
    return all(a == b for n, a, b in zip(shape, strides, other) if n != 1)


def _gradient_strides(model, inputs):
    """{name: gradient strides} from one training step of a copy of `model`, or None (with a
    warning) when no inputs are given and the model's hyperparameters cannot make them."""
    autocast = _training_autocast(model)
    if inputs is None:
        inputs = _training_batch(model)
        if inputs is None:
            warnings.warn('match_gradient_layout: no inputs and no model.H to make them from; '
                          'parameter strides left as they are')
            return None
    probe = copy.deepcopy(model)
    probe.zero_grad(set_to_none=True)
    cuda = sorted({p.device.index or 0 for p in probe.parameters() if p.device.type == 'cuda'})
    with torch.random.fork_rng(devices=cuda):       # the run's seeded draws stay the same
        with autocast:
            loss = training_loss(probe(*inputs))
        loss.backward()
    return {name: p.grad.stride() for name, p in probe.named_parameters() if p.grad is not None}


def _training_batch(model):
    """(x_in, x_target) shaped as train.py gives them: NHWC, H.n_batch images per process (the
    batch size decides which convolution kernels run)."""
    H = getattr(model, 'H', None)
    if H is None or not all(k in H for k in ('n_batch', 'image_size', 'image_channels')):
        return None
    p = next(model.parameters())
    shape = (H.n_batch, H.image_size, H.image_size, H.image_channels)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
    return x, x * 2 - 1


def _training_autocast(model):
    """train.py's autocast for H.amp (bf16 or fp16), since half-precision kernels lay out their
    gradients in their own way; a null context otherwise."""
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(getattr(model, 'H', {}).get('amp'))
    if dtype is None:
        return nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)
