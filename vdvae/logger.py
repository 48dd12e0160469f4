"""Rank-0 logging as upstream does it: every record goes to stdout, `log.txt` (floats with 5
decimals) and `log.jsonl` (machine-readable), with a `time` field; TensorBoard too when installed.
Other ranks get a logger that drops everything."""
import json
import math
import os
import time


def _format(value):
    return f'{value:.5f}' if isinstance(value, float) else str(value)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)                       # keep log.jsonl strict JSON
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class Logger:
    def __init__(self, save_dir, enabled=True, echo=True, tensorboard=True):
        self.enabled, self.echo = enabled, echo
        self.txt = self.jsonl = self.tb = None
        if not enabled:
            return
        os.makedirs(save_dir, exist_ok=True)
        self.txt_path = os.path.join(save_dir, 'log.txt')
        self.jsonl_path = os.path.join(save_dir, 'log.jsonl')
        self.txt = open(self.txt_path, 'a')
        self.jsonl = open(self.jsonl_path, 'a')
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(save_dir, 'tensorboard'))
            except ImportError:
                self.tb = None

    def __call__(self, *args, **record):
        """logprint('text') or logprint(type='train_loss', step=..., elbo=...)."""
        if not self.enabled:
            return
        record = dict(record, time=time.time())
        if args:
            record['message'] = ' '.join(str(a) for a in args)
        line = ', '.join(f'{k}: {_format(v)}' for k, v in record.items()
                         if k not in ('time', 'message'))
        if args:
            line = record['message'] + (f' ({line})' if line else '')
        if self.echo:
            print(line, flush=True)
        self.txt.write(line + '\n')
        self.txt.flush()
        self.jsonl.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + '\n')
        self.jsonl.flush()
        if self.tb is not None and record.get('type', '').endswith('_loss') and 'step' in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ('step', 'time', 'epoch'):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, record['step'])

    def close(self):
        for f in (self.txt, self.jsonl, self.tb):
            if f is not None:
                f.close()


def read_jsonl(path):
    """Records of a log.jsonl file, skipping a torn last line (a crash mid-write)."""
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
