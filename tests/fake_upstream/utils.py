"""FAKE of upstream openai/vdvae's utils.py, written for progcode's tests from
../shared/spec/vdvae_upstream.md; not upstream code.

MPI rank helpers (mpi4py is a hard dependency, imported at module top as upstream), the rank-0
logger writing `{log_prefix}.txt` and `{log_prefix}.jsonl` (spec §6.1), and the cross-rank stat
averaging, which moves every stat to CUDA (`.cuda()` quirk kept: no CPU path).
"""
import json
import math
import time

import numpy as np
import torch
import torch.distributed as dist
from mpi4py import MPI


def mpi_size():
    return MPI.COMM_WORLD.Get_size()


def mpi_rank():
    return MPI.COMM_WORLD.Get_rank()


def num_nodes():
    return math.ceil(mpi_size() / 8)      # assumes 8 GPUs per node


def gpus_per_node():
    size = mpi_size()
    return max(size // num_nodes(), 1) if size > 1 else 1


def local_mpi_rank():
    return mpi_rank() % gpus_per_node()


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def logger(log_prefix):
    """A print function that, on rank 0, echoes to stdout and appends to `{log_prefix}.txt` and
    `{log_prefix}.jsonl`; every record gets a 'time' and positional args become 'message'."""
    txt_path, jsonl_path = f'{log_prefix}.txt', f'{log_prefix}.jsonl'

    def logprint(*args, pprint=False, **kwargs):
        if mpi_rank() != 0:
            return
        record = {'time': time.ctime()}
        if args:
            record['message'] = ' '.join(str(a) for a in args)
        record.update({k: _plain(v) for k, v in kwargs.items()})
        keys = sorted(record) if pprint else list(record)
        txt = ', '.join(f'{k}: {record[k]:.5f}' if isinstance(record[k], float) else
                        f'{k}: {record[k]}' for k in keys)
        line = json.dumps(record, sort_keys=pprint)
        print(txt, flush=True)
        with open(txt_path, 'a+') as f:
            print(txt, file=f, flush=True)
        with open(jsonl_path, 'a+') as f:
            print(line, file=f, flush=True)
    return logprint


def get_cpu_stats_over_ranks(stat_dict):
    """{key: float} averaged over ranks (no collective with one process)."""
    keys = sorted(stat_dict.keys())
    stacked = torch.stack([torch.as_tensor(stat_dict[k]).detach().cuda().float() for k in keys])
    if mpi_size() > 1:
        dist.all_reduce(stacked)
        stacked = stacked / mpi_size()
    stacked = stacked.cpu()
    return {k: stacked[i].item() for i, k in enumerate(keys)}
