"""Pre-emption: SIGTERM (a cluster scheduler taking the machine back) and SIGINT (Ctrl-C) ask a
training run to stop; it finishes the step it is in, saves its latest state and exits with
128 + the signal's number (143, 130).

The handlers only record the request: a signal never interrupts a step or a checkpoint write, so a
second signal during the save is recorded too and the save completes. The loop reads the request
between steps, where the state is exactly what a periodic save would hold, and every rank of a
multi-process run agrees on it (one small all-reduce per step), so that all stop at the same step.
`kill -9` (SIGKILL), which no process can catch, still ends a run at once; the previous checkpoint
then stays, as always.
"""
import signal
import threading
from contextlib import contextmanager

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def preempted_status(signum):
    """The exit status of a run stopped by signal `signum`: 128 + its number, what a shell reports
    for a process the signal ended (143 for SIGTERM, 130 for SIGINT), so that a scheduler reads it
    as pre-empted, not as finished (0) or failed on bad input (2)."""
    return 128 + int(signum)


class StopRequest:
    """The first stop signal received (its number), 0 while none came."""

    def __init__(self):
        self.signum = 0

    def record(self, signum, frame=None):
        self.signum = self.signum or signum

    def agreed(self, device=None):
        """The signal every rank stops for (the largest number any rank received: SIGTERM over
        SIGINT), 0 if none did. A collective: every rank must call it at the same step."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.signum
        t = torch.tensor([self.signum], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())


def install_stop_handlers(request):
    """Let SIGTERM and SIGINT only record a stop request; returns the handlers they replaced
    ({} where signals cannot be handled: Python handles them in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, request.record) for s in STOP_SIGNALS}


@contextmanager
def stop_on_signals():
    """A `StopRequest` that SIGTERM and SIGINT set while inside; the previous handlers are back
    on leaving (training in-process, e.g. from a test or an experiment, leaves Ctrl-C as it was)."""
    request = StopRequest()
    previous = install_stop_handlers(request)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
