"""Processes and devices: one process, `torchrun`, or `mpiexec` (upstream's launcher).

One process needs nothing distributed. Under torchrun the usual RANK / WORLD_SIZE / LOCAL_RANK
variables are set. Under mpiexec, mpi4py (imported only then) gives the rank and world size, and
rank 0's host name becomes MASTER_ADDR, as upstream does. NCCL on CUDA, gloo on CPU.
"""
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

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


def setup_distributed(port=29500, device=None):
    """Detect the launcher, start the process group if there is more than one process, and pick
    this process's device (cuda:local_rank when CUDA is available, unless `device` says)."""
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
                                world_size=world)
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


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
