"""The two-stage model computes today what it computed when its golden outputs were recorded
(tests/golden/record_two_stage.py, from the code before `TwoStageHVAE` became the two-stage case
of `MultiStageHVAE`): the checkpoints written then load through the commands of then
(`--hps mnist16_stage2 --stage1_path RUN`, `--hps mnist16_conventional`), and the stats,
gradients, reconstructions, latents, samples and sample grid are bit for bit the same on the
recording machine's torch and CPU kind. Elsewhere floating point may round differently, so there
they must agree to float32 rounding (and the uint8 pictures to within one level)."""
import json
import os

import numpy as np
import pytest
import torch

from golden.two_stage_outputs import OUT, outputs, two_stage_hparams

with open(os.path.join(OUT, 'machine.json')) as f:
    RECORDED_ON = json.load(f)
SAME_MACHINE = RECORDED_ON == dict(torch=torch.__version__,
                                   cpu_capability=torch.backends.cpu.get_cpu_capability())


def compare(new, old, where):
    if isinstance(old, dict):
        assert new.keys() == old.keys(), where
        for k in old:
            compare(new[k], old[k], f'{where}.{k}')
    elif isinstance(old, list):
        assert len(new) == len(old), where
        for i, (a, b) in enumerate(zip(new, old)):
            compare(a, b, f'{where}[{i}]')
    else:
        assert new.dtype == old.dtype and new.shape == old.shape, where
        if SAME_MACHINE:
            assert torch.equal(new, old), where
        elif old.dtype == torch.uint8:
            assert (new.int() - old.int()).abs().max() <= 1, where
        else:
            torch.testing.assert_close(new, old, rtol=1e-4, atol=1e-5, msg=where)


@pytest.mark.parametrize('training', ['progressive', 'conventional'])
def test_two_stage_outputs_match_the_recorded_ones(training):
    old = torch.load(os.path.join(OUT, f'outputs-{training}.pt'), weights_only=True)
    new = outputs(two_stage_hparams(training), training)
    assert old['grads'] and old['stats']['loss'] > 0
    compare(new, old, training)


def test_the_recorded_checkpoints_are_the_two_stage_layout():
    """What a two-stage checkpoint of then holds: stage 1's weights and multiplier under stage1.,
    stage 2's under stage2., nothing else."""
    sd = torch.load(os.path.join(OUT, 'stage2', 'latest-model-ema.th'), weights_only=True)
    assert {k.split('.')[0] for k in sd} == {'stage1', 'stage2'}
    assert 'stage1.objective.multiplier.target_value' in sd
    stage1 = torch.load(os.path.join(OUT, 'stage1', 'latest-model-ema.th'), weights_only=True)
    assert all(torch.equal(sd['stage1.' + k], v) for k, v in stage1.items())
    assert np.isclose(float(sd['stage1.objective.multiplier.target_value']), 0.0064)


def test_the_sample_command_of_then_on_the_recorded_runs(tmp_path):
    from golden.two_stage_outputs import TINY_FLAGS
    from vdvae.__main__ import main
    for preset, run, extra in (('mnist16_stage2', 'stage2', ['--stage1_path',
                                                             os.path.join(OUT, 'stage1')]),
                               ('mnist16_conventional', 'conventional', [])):
        out = tmp_path / f'{run}.png'
        assert main(['sample', '--hps', preset, *TINY_FLAGS, *extra, '--restore_ema_path',
                     os.path.join(OUT, run, 'latest-model-ema.th'), '--n', '2', '--t', '0.9',
                     '--out', str(out)]) == 0
        assert out.stat().st_size > 0
