"""Record the two-stage model's golden outputs (tests/golden/two_stage/), as the code of the day
computes them: run from the repository root, `python tests/golden/record_two_stage.py`.

It trains (10 steps each, EMA rate 0.5 so that the kept EMA weights move off init, mnist16 at the tests' TINY size) a stage-1 run, a progressive stage-2 run
on it and a conventional run, keeps their `latest-model-ema.th` and `hparams.json`, then loads
each two-stage run as a user would (`--hps mnist16_stage2 --stage1_path ...`, `--hps
mnist16_conventional`) and records, under fixed seeds: the training stats and gradients, the
reconstructions, the exposed latents, per-stage samples, samples and the sample grid.
tests/test_golden.py recomputes all of it with today's code and compares. Recorded on 2026-12-06
from commit 19e63e7, the last with `progcode_ext/two_stage.py`'s own implementation.
"""
import json
import os
import shutil
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from golden.two_stage_outputs import OUT, TINY_FLAGS, outputs, two_stage_hparams  # noqa: E402
from vdvae import train  # noqa: E402


def main():
    torch.set_num_threads(1)          # as tests/conftest.py: the thread count changes sums
    if os.path.exists(OUT):
        raise SystemExit(f'{OUT} exists: remove it to record again')
    tmp = tempfile.mkdtemp()
    common = [*TINY_FLAGS, '--save_dir', tmp, '--num_iters', '10', '--iters_per_print', '1', '--ema_rate', '0.5',
              '--iters_per_images', '100000', '--epochs_per_eval', '100000', '--n_batch', '4']
    torch.manual_seed(0)
    assert train.main(['--hps', 'mnist16_stage1', '--desc', 'stage1', *common]) == 0
    assert train.main(['--hps', 'mnist16_stage2', '--desc', 'stage2', '--stage1_path',
                       os.path.join(tmp, 'stage1'), *common]) == 0
    assert train.main(['--hps', 'mnist16_conventional', '--desc', 'conventional', *common]) == 0
    os.makedirs(OUT)
    for run in ('stage1', 'stage2', 'conventional'):
        os.makedirs(os.path.join(OUT, run))
        for name in ('latest-model-ema.th', 'hparams.json'):
            shutil.copy(os.path.join(tmp, run, name), os.path.join(OUT, run, name))
    shutil.rmtree(tmp)
    for training in ('progressive', 'conventional'):
        torch.save(outputs(two_stage_hparams(training), training),
                   os.path.join(OUT, f'outputs-{training}.pt'))
    with open(os.path.join(OUT, 'machine.json'), 'w') as f:
        json.dump(dict(torch=torch.__version__,
                       cpu_capability=torch.backends.cpu.get_cpu_capability()), f)


if __name__ == '__main__':
    main()
