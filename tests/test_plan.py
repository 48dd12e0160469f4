"""The protocol's plan before anything trains (progcode_ext/experiments/plan.py, issue 29): every
run of Tables 1-2 and Figures 2 and 4 once, with its batch, dependencies, what is done, and the
cost estimates from the model built on the meta device."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from progcode_ext.experiments import plan
from vdvae import get_hparams
from vdvae.errors import UserError
from vdvae.models import build_model

REPO = Path(__file__).resolve().parents[1]
ARGV = ['--steps', '100', '--probe_steps', '50', '--seeds', '0,1', '--targets', '0.0512,0.0128']


def test_the_plan_holds_every_run_of_the_protocol_once(tmp_path):
    cfg, runs, headline = plan.protocol_runs(['--hps', 'mnist16', '--out', str(tmp_path), *ARGV])
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    assert headline == 0.0512
    for seed in (0, 1):                    # Tables 1 and 2 on every seed
        assert {f'vdvae-seed{seed}', f'table1-probe-seed{seed}', f'table1-gamma-seed{seed}',
                f'table2-conventional-seed{seed}',
                f'table2-continue-elbo-0.0512-seed{seed}'} <= set(names)
    # Figure 2's whole family (seed 0), though Table 2 was given two targets
    assert {f'stage1-{t}-seed0' for t in ('0.0512', '0.0256', '0.0128', '0.0064', '0.0032',
                                          '0.0016', '0.0008')} <= set(names)
    assert {'table2-stage2-0.0512-seed0', 'table2-stage2-0.0128-seed0'} <= set(names)
    assert 'table2-stage2-0.0256-seed0' not in names
    after = {r.name: r.after for r in runs}
    assert after['table1-probe-seed1'] == ('vdvae-seed1',)
    assert 'stage1-0.0128-seed0' in after['table2-stage2-0.0128-seed0']


def test_step_costs_are_the_real_models():
    """On the meta device, at batch 1: the parameters of the model train.py builds, and FLOPs
    that are half those of a real CPU step at batch 2 (the same count, linear in the batch)."""
    from torch.utils.flop_counter import FlopCounterMode
    params, trained, flops, activations = plan.step_cost(['--hps', 'mnist16'])
    H = get_hparams('mnist16')
    model = build_model(H)
    assert params == trained == sum(p.numel() for p in model.parameters())
    x = torch.zeros(2, 16, 16, 1)
    with FlopCounterMode(display=False) as real:
        model(x, x)['elbo'].backward()
    assert real.get_total_flops() == 2 * flops
    assert 1e5 < activations < 1e8                   # bytes per image: some, not absurd
    # a progressive stage 2 trains only stage 2: its stage 1 counts as weights alone
    p2, t2, _, _ = plan.step_cost(['--hps', 'mnist16_stage2', '--stage1_path', '/nowhere'])
    assert t2 < p2 and p2 - t2 == plan.step_cost(['--hps', 'mnist16_stage1'])[0]


def test_rows_say_what_is_done_and_what_is_left(tmp_path, monkeypatch):
    cfg, runs, headline = plan.protocol_runs(['--hps', 'mnist16', '--out', str(tmp_path), *ARGV])
    runs = [r for r in runs if r.name in ('vdvae-seed0', 'vdvae-seed1', 'stage1-0.0512-seed0')]

    def done(cfg, run):
        if run.name == 'vdvae-seed1':
            raise UserError('trained with other settings')
        return run.steps if run.name == 'vdvae-seed0' else 0

    monkeypatch.setattr(plan, 'steps_done', done)
    rows = {r['name']: r for r in plan.rows(cfg, runs, 'H100')}
    assert rows['vdvae-seed0']['hours'] == 0 and rows['vdvae-seed0']['done'] == 100
    assert rows['stage1-0.0512-seed0']['hours'] > 0
    assert rows['vdvae-seed1']['done'] == -1 and rows['vdvae-seed1']['hours'] > 0
    r = rows['stage1-0.0512-seed0']
    _, trained, flops, activations = plan.step_cost(['--hps', 'mnist16_stage1'])
    assert r['flops'] == flops * 32                  # mnist16's batch
    assert r['gib'] * 2 ** 30 == pytest.approx(activations * 32 + 20 * trained)
    text = plan.render(cfg, list(rows.values()), 'H100', headline)
    assert '| vdvae-seed1 | mnist16 | 100 | 32 | - | other settings |' in text
    assert 'Total:' in text and 'assumed 40%' in text


@pytest.mark.slow
def test_the_protocol_script_plans_and_trains_nothing(tmp_path):
    done = subprocess.run(['bash', str(REPO / 'scripts' / 'paper_protocol.sh'), 'mnist16', '--plan'],
                          capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, OUT=str(tmp_path / 'out'), STEPS='100',
                                   PROBE_STEPS='50', TABLE2_TARGETS='0.0512', PLAN_GPU='V100'))
    assert done.returncode == 0, done.stderr[-2000:]
    assert '| vdvae-seed0 | mnist16 | 100 | 32 | - | 0 |' in done.stdout
    assert 'V100 hours left' in done.stdout
    assert not (tmp_path / 'out').exists()
    bad = subprocess.run(['bash', str(REPO / 'scripts' / 'paper_protocol.sh'), 'mnist16',
                          '--plot'], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and 'usage:' in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize('launcher', ['torchrun', 'mpiexec'])
def test_the_launch_it_plans_for_two_gpus_starts_two_ranks(tmp_path, launcher):
    """NGPU=2: the plan says how its first run starts, and that launcher really starts train.py
    on two ranks (here with --help: each rank prints it). The protocol's rehearsal trains
    through both (scripts/rehearse.sh with NGPU=2 LAUNCHER=...)."""
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, OUT=str(tmp_path / 'out'), STEPS='100', PROBE_STEPS='50', NGPU='2',
               TABLE2_TARGETS='0.0512', LAUNCHER=launcher, PYTHON=sys.executable,
               PATH=bindir + os.pathsep + os.environ.get('PATH', ''))
    done = subprocess.run(['bash', str(REPO / 'scripts' / 'paper_protocol.sh'), 'mnist16', '--plan'],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    command = shlex.split(done.stdout.split('The first run starts as: `')[1].split('`')[0])
    train_py = command.index(str(REPO / 'train.py'))
    expected = {'torchrun': ['torchrun', '--standalone', '--nproc_per_node', '2'],
                'mpiexec': ['mpiexec', '-n', '2', sys.executable]}[launcher]
    assert command[:train_py] == expected and '--desc' in command
    ran = subprocess.run(command[:train_py + 1] + ['--help'], capture_output=True, text=True,
                         env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.count('usage: ') == 2
    plain = subprocess.run(['bash', str(REPO / 'scripts' / 'paper_protocol.sh'), 'mnist16',
                            '--plan'], capture_output=True, text=True, cwd=REPO,
                           env=dict(env, NGPU='1'))
    assert f'starts as: `{shlex.quote(sys.executable)} {REPO / "train.py"}' in plain.stdout
