"""Each experiment end to end on a CPU-sized config: results.json, report.md and the PNGs are
written and non-empty, finished runs are not re-run, claims are inconclusive when a model failed
a convergence check, and the demo report states each claim. Plus the run planner and the
convergence checks on their own."""
import json
import os
import socket
import sys

import pytest

from progcode_ext.experiments import (chains, cli, convergence, demo, evaluate, lpips_vs_mse,
                                      profile, rd_curve, runs, stages, table1, table2)
from progcode_ext.experiments.runs import ExperimentError, Run
from vdvae.checkpoint import load_file
from vdvae.errors import ConfigError


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
    cfg = demo.config(str(tmp_path_factory.mktemp('exp')), 'quick', jobs=1)
    cfg.steps = cfg.probe_steps = 5
    cfg.targets = '0.05,0.02'
    cfg.distortion_target = 0.02
    cfg.n_eval, cfg.n_images, cfg.n_samples = 32, 16, 48
    cfg.train_flags += ' --n_batch 8'
    return cfg


def written(folder, *names):
    for name in names:
        path = os.path.join(folder, name)
        assert os.path.getsize(path) > 0, path
    with open(os.path.join(folder, 'results.json')) as f:
        return json.load(f)


@pytest.mark.slow
def test_experiments_end_to_end(cfg, capsys, monkeypatch):
    results = dict(table1=table1.run(cfg))
    row = results['table1']
    res = written(os.path.join(cfg.out, 'table1'), 'report.md', 'table1.png', 'reconstructions.png')
    assert res['K'] == 5 and res['progressive_res'] == 8           # mnist16: z_1..z_K at <= 8
    assert res['rows'][0]['R_K'] >= 0 and res['rows'][0]['D_K'] > 0
    assert [s['res'] for s in res['rate_shares']] == [1, 4, 8, 16]
    assert res['rate_shares'][-1]['share'] == pytest.approx(1.0)
    # 5 steps cannot converge: the claim is inconclusive and names the failed check
    assert row['verdict'] == res['verdict'] == 'inconclusive'
    report = open(os.path.join(cfg.out, 'table1', 'report.md')).read()
    assert '**inconclusive** (' in report and 'failed' in report
    assert {c['model'] for c in res['checks']} == {'table1-probe-seed0', 'table1-gamma-seed0'}
    assert res['mse_noise'] >= 0 and set(res['rows'][0]['moved']) == {'D_K', 'lambda*',
                                                                      'VDVAE -ELBO'}

    rd = results['rd_curve'] = rd_curve.run(cfg)
    res = written(os.path.join(cfg.out, 'rd_curve'), 'report.md', 'rd_curve.png', 'reconstructions.png')
    assert [r['target'] for r in rd['rows']] == [0.05, 0.02] == [r['target'] for r in res['rows']]
    assert all(c['check'] == 'D within 10% of its target' for c in res['checks'])

    res = results['lpips_vs_mse'] = lpips_vs_mse.run(cfg)
    written(os.path.join(cfg.out, 'lpips_vs_mse'), 'report.md', 'lpips_vs_mse.png')
    assert res['metric'] == 'PD-mnist16' and len(res['rows']) == 2
    report = open(os.path.join(cfg.out, 'lpips_vs_mse', 'report.md')).read()
    assert 'not LPIPS' in report

    # Table 2's reference statistics are the training split's (FID's usual reference)
    seen = []
    real = chains.sample_quality

    def spy(samples, reference, dataset, **kwargs):
        seen.append((len(reference), kwargs['reference_split']))
        return real(samples, reference, dataset, **kwargs)
    monkeypatch.setattr(chains, 'sample_quality', spy)
    res = results['table2'] = table2.run(cfg)
    controls = ('continued-elbo', 'continued-progressive', 'warmup', 'vdvae-wide')
    written(os.path.join(cfg.out, 'table2'), 'report.md', 'table2.png',
            'samples-progressive-0.05.png', 'samples-progressive-0.02.png',
            'samples-conventional.png', 'samples-compute-matched.png',
            *[f'samples-{c}.png' for c in controls])
    assert seen and set(seen) == {(4000, 'train')}
    assert res['metric'] == 'FD-mnist16'
    assert res['headline'] == 0.02 and res['rule']['given']
    assert [x['target'] for x in res['per_lambda']] == [0.05, 0.02]
    models = res['models']
    assert set(models) == {'conventional', 'compute_matched', 'progressive', 'continued_elbo',
                           'continued_progressive', 'warmup', 'vdvae_wide'}
    # the paper's baseline is the conventional run at --steps, the compute-matched one its end
    assert models['conventional'][0]['run'] == 'table2-conventional-seed0@5'
    assert models['conventional'][0]['step'] == 5 and models['compute_matched'][0]['step'] == 10
    assert res['conventional'][0]['parameters'] == res['headline_progressive'][0]['parameters']
    # each score is the mean of its two draws; the window's checkpoints are measured once each
    for rows in models.values():
        r = rows[0]
        assert r['elbo'] == pytest.approx(sum(r['elbo_draws']) / 2)
        assert r['sample_metric'] == pytest.approx(sum(r['sample_metric_draws']) / 2)
        assert r['path'][-1]['step'] == r['step']
    assert [p['step'] for p in models['progressive'][0]['path']] == [1, 3, 5]
    assert [p['step'] for p in models['compute_matched'][0]['path']] == [6, 8, 10]
    # the strongest baseline: the conventional-objective model with the lowest -ELBO
    candidates = {k: models[k][0]['elbo'] for k in table2.BASELINES}
    assert res['strongest'] == min(candidates, key=candidates.get)
    assert res['noise']['sample_metric'] > 0 and res['noise']['elbo'] >= 0
    for x in res['per_lambda']:
        assert {v.verdict for v in x['verdicts'].values()} == {'inconclusive'}
    assert {v.verdict for c in res['comparisons'].values() for v in c.values()} == {'inconclusive'}
    saved = written(os.path.join(cfg.out, 'table2'))
    assert saved['verdicts']['elbo']['verdict'] == 'inconclusive'
    report = open(os.path.join(cfg.out, 'table2', 'report.md')).read()
    assert 'not FID' in report and "The metrics' own noise" in report
    assert 'The strongest conventional baseline, by a rule fixed before any result' in report
    assert 'continued by either objective' in report

    # the demo's report names each claim and the failed checks
    text = '\n'.join(demo.report_lines(cfg, results, 1.0, 0.5))
    rows = demo.claim_rows(results)
    assert text.count('| **inconclusive** |') == len(rows)
    # Table 2's claims against the paper's baseline, and against the strongest where it is another
    strongest = results['table2']['strongest']
    assert len(rows) == 5 + 2 * (strongest != 'conventional')
    if strongest != 'conventional':
        assert 'the strongest conventional baseline (' in text
    assert 'This is the smoke test' in text and 'Convergence checks:' in text
    assert text.count('- stage1-0.02-seed0:') == 1   # (rd_curve's and table2's stage 1: once)

    # table2's stage 1 is rd_curve's run at its target; every run is finished now, so a second
    # pass trains nothing
    capsys.readouterr()
    table1.run(cfg)
    out = capsys.readouterr().out
    assert 'training' not in out and 'not re-run' in out


@pytest.mark.slow
def test_two_against_three_stages(cfg, capsys):
    cfg.distortion_targets, n_images = None, cfg.n_images
    cfg.n_images = 4
    try:
        res = stages.run(cfg)
    finally:
        cfg.n_images = n_images
    written(os.path.join(cfg.out, 'stages'), 'report.md', 'staircase.png', 'reconstructions-2.png',
            'reconstructions-3.png', 'samples-2.png', 'samples-3.png')
    assert res['targets'] == {2: [0.0064], 3: [0.0256, 0.0064]}
    row = res['rows'][0]
    assert row[2]['widths'] == [32, 32] and row[3]['widths'] == [27, 27, 27]
    assert abs(row[3]['parameters'] / row[2]['parameters'] - 1) < 0.01
    for n in (2, 3):            # one point per stage; the rate only grows along the code
        assert len(row[n]['rates']) == len(row[n]['mses']) == n
        assert all(a <= b for a, b in zip(row[n]['rates'], row[n]['rates'][1:]))
        assert row[n]['rate_at_lambda'] == row[n]['rates'][n - 2]
    # 5 steps cannot converge: every finding is inconclusive; each stage of each chain is checked
    assert {res[k] for k in ('elbo_better', 'sample_metric_better',
                             'rate_at_lambda_higher')} == {'inconclusive'}
    assert [c.model for c in res['checks']] == ['stages2-s1-seed0', 'stages2-s2-seed0',
                                                   'stages3-s1-seed0', 'stages3-s2-seed0',
                                                   'stages3-s3-seed0']
    report = open(os.path.join(cfg.out, 'stages', 'report.md')).read()
    assert 'not FID' in report and '| 3 stages | 0.0256, 0.0064 | 27, 27, 27 |' in report
    capsys.readouterr()
    runs.run_all(cfg, stages.plan(cfg))
    assert 'training' not in capsys.readouterr().out


def test_table2_headline_is_the_smallest_lambda_leaving_stage2_half_the_rate(cfg, monkeypatch):
    rates = {'vdvae-seed0': 0.2, 'stage1-0.05-seed0': 0.06, 'stage1-0.02-seed0': 0.09,
             'stage1-0.01-seed0': 0.14}
    monkeypatch.setattr(table2, 'evaluate_run',
                        lambda cfg, folder, device: {'rate': rates[os.path.basename(folder)]})
    monkeypatch.setattr(cfg, 'distortion_target', None)
    monkeypatch.setattr(cfg, 'targets', '0.05,0.02,0.01')
    headline, rule = table2.choose_headline(cfg, 'cpu')
    assert headline == 0.02 and rule['met'] and rule['limit'] == pytest.approx(0.1)
    assert rule['eligible'] == [0.05, 0.02]
    rates['stage1-0.05-seed0'] = rates['stage1-0.02-seed0'] = 0.11     # none leaves half
    headline, rule = table2.choose_headline(cfg, 'cpu')
    assert headline == 0.05 and not rule['met']
    assert 'no lambda of the family meets the rule' in table2.untestable_reason(
        [{'stage2_share': 0.3}], rule)
    assert 'stage 2 has nothing to code' in table2.untestable_reason([{'stage2_share': 0.05}])
    assert table2.untestable_reason([{'stage2_share': 0.3}]) is None
    # the plan: the rule's runs first; the headline's other seeds and the controls after
    monkeypatch.setattr(cfg, 'seeds', [0, 1])
    names = [r.name for r in table2.plan(cfg, headline=0.02)]
    assert [r.name for r in table2.rule_runs(cfg)] == names[:4]
    assert {'stage1-0.02-seed1', 'table2-stage2-0.02-seed1', 'table2-conventional-seed1',
            'table2-continue-elbo-0.02-seed1', 'table2-continue-progressive-0.02-seed1',
            'table2-conventional-warmup-seed1', 'table2-vdvae-wide-seed1'} <= set(names)
    assert 'stage1-0.05-seed1' not in names
    planned = {r.name: r for r in table2.plan(cfg, headline=0.02)}
    conventional = planned['table2-conventional-seed1']
    assert conventional.steps == 2 * cfg.steps and conventional.ckpt_every == runs.tenth(cfg.steps)
    for objective, preset in (('elbo', 'mnist16_conventional'), ('progressive', 'mnist16_stage2')):
        cont = planned[f'table2-continue-{objective}-0.02-seed1']
        assert cont.preset == preset and cont.steps == cfg.steps // 2
        assert cont.after == ('stage1-0.02-seed1', 'table2-stage2-0.02-seed1')
        assert f"--init_from={runs.run_dir(cfg, 'table2-stage2-0.02-seed1')}" in cont.flags
    warm = planned['table2-conventional-warmup-seed1']
    assert warm.flags[-2:] == ('--stage1_rate_warmup', str(cfg.steps // 2))
    monkeypatch.setattr(cfg, 'controls', 'budget')
    names = {r.name for r in table2.plan(cfg, headline=0.02)}
    assert 'table2-continue-elbo-0.02-seed1' in names and 'table2-vdvae-wide-seed1' not in names
    monkeypatch.setattr(cfg, 'stage2_family', 'headline')
    names = {r.name for r in table2.plan(cfg, headline=0.02)}
    assert 'table2-stage2-0.05-seed0' not in names and 'table2-stage2-0.02-seed0' in names
    stage2 = next(r for r in table2.plan(cfg, headline=0.02) if r.name == 'table2-stage2-0.02-seed1')
    assert stage2.after == ('stage1-0.02-seed1',)                  # on its own seed's stage 1
    assert stage2.flags[-1] == f"--stage1_path={runs.run_dir(cfg, 'stage1-0.02-seed1')}"


def test_the_wide_vdvae_has_as_many_parameters_as_the_two_stage_model(cfg):
    goal = table2.parameters(cfg, 'mnist16_conventional')
    width = table2.matched_width(cfg)
    count = {w: table2.parameters(cfg, 'mnist16', '--width', str(w))
             for w in (width - 1, width, width + 1)}
    assert width > 32 and abs(count[width] - goal) <= min(abs(count[w] - goal) for w in count)
    assert abs(count[width] / goal - 1) < 0.07          # mnist16: 51, -5.8% (52: +5.9%)


def test_strongest_baseline_is_the_lowest_elbo_of_the_conventional_objective_models():
    rows = lambda *elbos: {s: {'elbo': e, 'sample_metric': 0.0} for s, e in enumerate(elbos)}
    models = dict(progressive=rows(0.1, 0.1), conventional=rows(1.2, 1.0),
                  compute_matched=rows(1.05, 1.05), continued_progressive=rows(0.5, 0.5))
    assert table2.strongest_baseline(models) == 'compute_matched'      # mean 1.05 < 1.1
    models['continued_elbo'] = rows(1.04, 1.05)
    assert table2.strongest_baseline(models) == 'continued_elbo'       # the progressive rows never


def test_stage_chains_match_parameters(cfg):
    cfg.distortion_targets = [0.04, 0.02, 0.01]
    try:
        assert stages.chain_targets(cfg) == {2: [0.01], 4: [0.04, 0.02, 0.01]}
        widths = stages.chain_widths(cfg)
        two = stages.parameter_count(cfg, [0.01], widths[2])
        four = stages.parameter_count(cfg, [0.04, 0.02, 0.01], widths[4])
        assert widths[2] == [32, 32] and len(set(widths[4])) == 1 and widths[4][0] < 32
        for w in {widths[4][0] - 1, widths[4][0] + 1}:     # no common width is closer
            other = stages.parameter_count(cfg, [0.04, 0.02, 0.01], [w] * 4)
            assert abs(other - two) >= abs(four - two)
        plan = stages.plan(cfg)
        assert [r.name for r in plan[:6]] == ['stages2-s1-seed0', 'stages2-s2-seed0'] + [
            f'stages4-s{k}-seed0' for k in (1, 2, 3, 4)]
        last = plan[5]
        assert last.after == ('stages4-s1-seed0', 'stages4-s2-seed0', 'stages4-s3-seed0')
        assert any(f.startswith('--stage_paths=') and f.count(',') == 2 for f in last.flags)
        cfg.distortion_targets = [0.01]
        with pytest.raises(ConfigError, match='at least two targets'):
            stages.chain_targets(cfg)
    finally:
        cfg.distortion_targets = None


@pytest.mark.slow
def test_without_weights_and_without_standin_the_error_names_the_file(cfg, capsys):
    assert lpips_vs_mse.main(['--hps', 'mnist16', '--out', cfg.out, '--steps', '5',
                              '--targets', '0.05,0.02', '--train_flags=' + cfg.train_flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'LPIPS' in err and '--lpips_weights' in err


@pytest.mark.slow
def test_profile_of_a_trained_checkpoint(cfg):
    ckpt = os.path.join(cfg.out, 'runs', 'vdvae-seed0', 'latest-model-ema.th')
    if not os.path.exists(ckpt):
        runs.run_all(cfg, table1.plan(cfg)[:1])
    cfg.checkpoint, cfg.probe_steps = ckpt, 2
    try:
        rows = profile.run(cfg)
    finally:
        cfg.checkpoint, cfg.probe_steps = None, 5
    res = written(os.path.join(cfg.out, 'profile'), 'report.md', 'profile.png')
    assert [r['res'] for r in rows] == [1, 4, 8, 16] and [r['k'] for r in rows] == [1, 3, 5, 7]
    assert all(a['rate'] <= b['rate'] + 1e-12 for a, b in zip(rows, rows[1:]))
    assert all(r['distortion'] > 0 for r in rows[:-1]) and rows[-1]['distortion'] is None
    assert res['rows'][2]['k'] == 5 and res['table1']['res'] == 8


def test_lr_decay_ends_each_run_at_its_own_last_step(cfg, monkeypatch):
    run = Run('x', 'mnist16', 40)
    assert '--lr_decay_iters' not in runs.run_argv(cfg, run)
    monkeypatch.setattr(cfg, 'lr_decay', True, raising=False)
    argv = runs.run_argv(cfg, run)
    assert argv[argv.index('--lr_decay_iters') + 1] == '40'


def test_a_finished_run_with_other_settings_is_not_reused(cfg):
    vdvae = table1.plan(cfg)[0]
    runs.run_all(cfg, [vdvae])
    assert runs.run_all(cfg, [vdvae])[vdvae.name].endswith('vdvae-seed0')
    changed = Run(vdvae.name, vdvae.preset, vdvae.steps, vdvae.flags + ('--lr', '0.5'))
    with pytest.raises(ExperimentError, match=r"lr: [0-9.e-]+ -> 0\.5.*use another --out"):
        runs.run_all(cfg, [changed])


# ------------------------------------------------------------------------------------------------
# The run planner

@pytest.mark.slow
def test_parallel_runs_respect_dependencies_and_train_in_subprocesses(cfg, tmp_path):
    cfg2 = demo.config(str(tmp_path), 'quick', jobs=2)
    cfg2.train_flags += ' --n_batch 4'
    plan = [Run('a', 'mnist16_stage1', 5), Run('b', 'mnist16', 5),
            Run('c', 'mnist16_stage2', 5, (f"--stage1_path={tmp_path / 'runs' / 'a'}",),
                after=('a',))]
    folders = runs.run_all(cfg2, plan)
    for name in 'abc':
        assert evaluate.run_steps(folders[name]) == 5
        assert os.path.exists(os.path.join(folders[name], 'iter-4-model-ema.th'))  # 4/5 of 5
    # each trained in its own one-thread process (2 cores / 2 jobs, or 1 where there is 1 core)
    assert os.path.getsize(tmp_path / 'runs' / 'c.out') >= 0


@pytest.mark.parametrize('jobs', [1, 2])
def test_the_planner_trains_same_shaped_runs_as_ensembles(tmp_path, jobs):
    """--ensemble 2: the two seeds of each kind train as one ensemble (each of its runs an
    ordinary folder, equal to the run trained alone to float rounding), a run of another shape
    alone, the dependent stage 2s after their stage 1s; a finished plan is not re-run."""
    cfg = demo.config(str(tmp_path), 'quick', jobs=jobs, ensemble=2)
    cfg.train_flags += ' --n_batch 4'
    plan = [Run(f'a{s}', 'mnist16_stage1', 3, ('--seed', str(s))) for s in (0, 1)]
    plan += [Run(f'c{s}', 'mnist16_stage2', 3, ('--seed', str(s), '--stage1_path',
                                                 str(tmp_path / 'runs' / f'a{s}')),
                 after=(f'a{s}',)) for s in (0, 1)]
    plan += [Run('v', 'mnist16', 3)]
    folders = runs.run_all(cfg, plan)
    for name in ('a0', 'a1', 'c0', 'c1', 'v'):
        assert evaluate.run_steps(folders[name]) == 3
    alone = demo.config(str(tmp_path / 'alone'), 'quick', jobs=1)
    alone.train_flags = cfg.train_flags
    runs.run_all(alone, [Run('a1', 'mnist16_stage1', 3, ('--seed', '1'))])
    a = load_file(os.path.join(folders['a1'], 'latest-model.th'))
    b = load_file(str(tmp_path / 'alone' / 'runs' / 'a1' / 'latest-model.th'))
    assert max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()) < 1e-4
    if jobs == 2:       # each ensemble wrote one output file, named after its first run
        assert {'a0.out', 'c0.out', 'v.out'} <= set(os.listdir(tmp_path / 'runs'))
        assert not {'a1.out', 'c1.out'} & set(os.listdir(tmp_path / 'runs'))
    assert runs.run_all(cfg, plan) == folders


def test_ensemble_groups_only_runs_that_differ_in_what_members_may():
    cfg = demo.config('/nonexistent', 'quick', ensemble=3)
    same = [(Run(f's{i}', 'mnist16_stage1', 10, ('--seed', str(i), '--distortion_target',
                                                   str(0.01 * (i + 1)))), 0) for i in range(4)]
    other_lr = (Run('lr', 'mnist16_stage1', 10, ('--lr', '0.5')), 0)
    other_steps = (Run('long', 'mnist16_stage1', 20), 0)
    resumed = (Run('r', 'mnist16_stage1', 10, ('--seed', '9')), 5)

    class Q:
        waiting = [other_lr, *same, other_steps, resumed]
    ready = list(Q.waiting)
    group = runs.take_group(cfg, Q, ready)
    assert [run.name for run, _ in group] == ['lr']
    group = runs.take_group(cfg, Q, ready)
    assert [run.name for run, _ in group] == ['s0', 's1', 's2']       # at most --ensemble
    assert [run.name for run, _ in ready] == ['s3', 'long', 'r'] and ready == Q.waiting
    cfg.ensemble = 1
    assert len(runs.take_group(cfg, Q, ready)) == 1


@pytest.mark.slow
def test_a_failed_parallel_run_is_one_clear_error(tmp_path):
    cfg = demo.config(str(tmp_path), 'quick', jobs=2)
    plan = [Run('bad', 'mnist16', 5, ('--width', 'wide'))]
    with pytest.raises(ExperimentError, match=r"run bad failed \(exit 2\).*width"):
        runs.run_all(cfg, plan)


def test_a_plan_grows_once_the_runs_its_choice_reads_have_finished(cfg, tmp_path, monkeypatch):
    """The demo's one pass: runs that depend on the headline join the queue as soon as the rule's
    runs have finished, while the runs that do not depend on it are still waiting or training."""
    order = []
    monkeypatch.setattr(runs, 'steps_done', lambda cfg, run: 0)
    monkeypatch.setattr(runs, 'launch_command', lambda cfg, run, done, launcher: (
        order.append(run.name) or [sys.executable, '-c', 'pass']))
    local = demo.config(str(tmp_path), 'quick', jobs=2)
    a, long_ = Run('rule', 'p', 1), Run('long', 'p', 100)
    grown = []

    def more():
        grown.append(set(order))
        return [Run('chosen', 'p', 1, after=('rule',)), a]
    folders = runs.run_all(local, [a, long_], (['rule'], more))
    assert grown == [{'rule', 'long'}] and order[-1] == 'chosen'
    assert set(folders) == {'rule', 'long', 'chosen'}
    order.clear()
    local.jobs = 1
    monkeypatch.setattr(runs, 'upstream_loop', lambda cfg: True)    # (through launch_command)
    runs.run_all(local, [a, long_], (['rule'], lambda: [Run('chosen', 'p', 1, after=('rule',))]))
    assert order.index('chosen') > order.index('rule')
    with pytest.raises(ExperimentError, match='wait for runs that cannot finish'):
        runs.run_all(local, [a], (['never'], lambda: []))


def test_launches_that_cannot_share_a_machine_are_kept_apart(tmp_path, monkeypatch):
    """Upstream's loop starts torch.distributed on --port for every run: two at once each get a
    free port of their own. A launcher (NGPU > 1) takes every GPU for one run: several jobs at
    once are refused before anything trains."""
    cfg = demo.config(str(tmp_path), 'quick', jobs=2)
    cfg.loop, cfg.vdvae_root = 'upstream', None
    ports = [int(c[c.index('--port') + 1]) for c in
             (runs.launch_command(cfg, Run('a', 'mnist16', 1), 0, ['torchrun']) for _ in range(2))]
    assert ports[0] != ports[1]
    for port in ports:                               # free when given
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', port))
    cfg.loop = 'progcode'
    monkeypatch.setenv('LAUNCH', 'torchrun --standalone --nproc_per_node 2')
    with pytest.raises(ExperimentError, match='set JOBS=1'):
        runs.run_all(cfg, [Run('a', 'mnist16', 1)])
    assert not os.path.exists(os.path.join(cfg.out, 'runs', 'a'))


def test_plan_checks_and_critical_path():
    a, b = Run('a', 'p', 10), Run('b', 'p', 10, cost=3.0)
    c = Run('c', 'p', 100, after=('a',))
    assert runs.check_plan([a, b, c, a]) == [a, b, c]
    with pytest.raises(ExperimentError, match="two different runs are named 'a'"):
        runs.check_plan([a, Run('a', 'p', 11)])
    with pytest.raises(ExperimentError, match='needs run z, which is not planned'):
        runs.check_plan([Run('y', 'p', 1, after=('z',))])
    # a waits for nothing but has the longest chain behind it: it goes first
    assert runs.critical_path([a, b, c]) == {'a': 110, 'b': 30, 'c': 100}
    assert runs.last_fifth_step(1500) == 1200 and runs.last_fifth_step(5) == 3
    assert runs.window_steps(700) == [420, 560, 700] and runs.tenth(5) == 1
    assert runs.window_steps(5) == [1, 3, 5] and runs.window(2, (2, 9, 10)) == [(9, 1), (10, 2)]


# ------------------------------------------------------------------------------------------------
# The convergence checks

def test_convergence_checks():
    ok = convergence.reaches_target('m', 'D', 0.0068, 0.0064)
    assert ok.passed and '+6.2%' in ok.detail
    assert not convergence.reaches_target('m', 'D', 0.0057, 0.0064).passed         # -10.9%
    assert convergence.settled('m', '-ELBO', 1.000, 0.981, 1000).passed                # -1.9%
    moved = convergence.settled('m', '-ELBO', 1.000, 0.979, 1000)
    assert not moved.passed and '-2.10%' in moved.detail
    missing = convergence.settled('m', '-ELBO', None, 0.9, 1000)
    assert not missing.passed and 'no checkpoint' in missing.detail
    short = convergence.settled('m', '-ELBO', 1.0, 1.0, 249)             # a window of 49 steps
    assert not short.passed and 'too short to tell' in short.detail
    assert convergence.verdict([True, True], [ok]) == 'held'
    assert convergence.verdict([True, False], [ok]) == 'did not hold'
    assert convergence.verdict([True, True], [ok, moved]) == 'inconclusive'
    assert 'm: -ELBO moved < 2%' in convergence.describe_failures([ok, moved])


def test_seeds_and_steps_are_validated(capsys):
    assert cli.parse(['--seeds', '0,1,2'], 'd').seeds == [0, 1, 2]
    for bad in ('', '0,0'):
        with pytest.raises(ValueError, match='--seeds'):
            cli.parse(['--seeds', bad], 'd')
    with pytest.raises(SystemExit) as e:
        cli.parse(['--seeds', 'a'], 'd')
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith(
        'error: argument --seeds: expected comma-separated integers\n')
    with pytest.raises(ValueError, match='--steps 3: at least 5'):
        cli.parse(['--steps', '3', '--out', '/tmp/x'], 'd')


def test_demo_seeds_and_record_spread_are_checked_before_anything_trains(tmp_path, capsys):
    out = str(tmp_path / 'demo')
    assert demo.main(['--quick', '--out', out, '--record_spread']) == 2
    assert 'give 3 seeds or more' in capsys.readouterr().err
    assert demo.main(['--quick', '--out', out, '--seeds', '1,1']) == 2
    assert '--seeds [1, 1]: give at least one seed, each once' in capsys.readouterr().err
    assert not os.path.exists(out)


def test_measured_spreads_are_kept_beside_the_others(tmp_path):
    from progcode_ext.experiments.verdicts import (Verdict, record_spreads, spread_of)
    path = tmp_path / 'spread.json'
    path.write_text(json.dumps({'about': 'x', 'mnist16': {'steps 9': {'table1/mse': {
        'sd': 1.0, 'df': 2, 'source': 'old'}}}}))
    assert spread_of(Verdict('held', 2, 1.0, differences=[1.0, 2.0])) is None
    measured = spread_of(Verdict('held', 3, 2.0, differences=[1.0, 2.0, 3.0]))
    assert measured == {'sd': 1.0, 'df': 2}
    record_spreads('mnist16', 700, {'table2/conventional/elbo': measured}, 'demo, commit c',
                   path=str(path))
    table = json.loads(path.read_text())
    assert table['mnist16']['steps 9']['table1/mse']['source'] == 'old'
    assert table['mnist16']['steps 700']['table2/conventional/elbo'] == dict(
        sd=1.0, df=2, source='demo, commit c')


def test_table_head_has_one_separator_per_column():
    from progcode_ext.experiments.report import table_head
    assert table_head('a', 'b c', '') == ['| a | b c | |', '|---|---|---|']
    head, rule = table_head(*'xyz')
    assert head.count('|') == rule.count('|') == 4
