"""Each experiment end to end on a CPU-sized config: results.json, report.md and the PNGs are
written and non-empty, finished stages are not re-run, and the demo report states each claim."""
import json
import os

import pytest

from progcode_ext.experiments import common, demo, lpips_vs_mse, profile, rd_curve, table1, table2


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
    cfg = demo.config(str(tmp_path_factory.mktemp('exp')), 'quick')
    cfg.steps = cfg.probe_steps = 3
    cfg.targets = '0.05,0.02'
    cfg.n_eval, cfg.n_images, cfg.n_samples = 32, 16, 48
    cfg.train_flags += ' --n_batch 8'
    return cfg


def written(folder, *names):
    for name in names:
        path = os.path.join(folder, name)
        assert os.path.getsize(path) > 0, path
    with open(os.path.join(folder, 'results.json')) as f:
        return json.load(f)


def test_experiments_end_to_end(cfg, capsys):
    row = table1.run(cfg)
    res = written(os.path.join(cfg.out, 'table1'), 'report.md', 'table1.png', 'reconstructions.png')
    assert res['K'] == 3 and res['R_K'] >= 0 and res['D_K'] > 0 and 'claim_held' in res
    assert row['gamma'] == pytest.approx(res['gamma'])

    rows = rd_curve.run(cfg)
    res = written(os.path.join(cfg.out, 'rd_curve'), 'report.md', 'rd_curve.png', 'reconstructions.png')
    assert [r['target'] for r in rows] == [0.05, 0.02] == [r['target'] for r in res['rows']]

    res = lpips_vs_mse.run(cfg)
    written(os.path.join(cfg.out, 'lpips_vs_mse'), 'report.md', 'lpips_vs_mse.png')
    assert res['metric'] == 'PD-mnist5k' and len(res['rows']) == 2
    report = open(os.path.join(cfg.out, 'lpips_vs_mse', 'report.md')).read()
    assert 'not LPIPS' in report

    res = table2.run(cfg)
    written(os.path.join(cfg.out, 'table2'), 'report.md', 'table2.png',
            'samples-progressive.png', 'samples-conventional.png')
    assert res['metric'] == 'FD-mnist5k'
    assert res['progressive']['parameters'] == res['conventional']['parameters']
    assert 'not FID' in open(os.path.join(cfg.out, 'table2', 'report.md')).read()

    # table2's stage 1 is rd_curve's run at the preset's target when it is in the series; every
    # stage is finished now, so a second pass trains nothing
    capsys.readouterr()
    table1.run(cfg)
    out = capsys.readouterr().out
    assert 'training' not in out and 'not re-run' in out


def test_without_weights_and_without_standin_the_error_names_the_file(cfg, capsys):
    assert lpips_vs_mse.main(['--hps', 'mnist5k', '--out', cfg.out, '--steps', '3',
                              '--targets', '0.05,0.02', '--train_flags=' + cfg.train_flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'LPIPS' in err and '--lpips_weights' in err


def test_profile_of_a_trained_checkpoint(cfg):
    ckpt = os.path.join(cfg.out, 'runs', 'vdvae', 'latest-model-ema.th')
    if not os.path.exists(ckpt):
        table1.train_stage(cfg, 'vdvae', cfg.hps)
    cfg.checkpoint, cfg.probe_steps = ckpt, 2
    rows = profile.run(cfg)
    res = written(os.path.join(cfg.out, 'profile'), 'report.md', 'profile.png')
    assert [r['res'] for r in rows] == [1, 4, 8, 16, 32] and [r['k'] for r in rows] == [1, 3, 5, 7, 9]
    assert all(a['rate'] <= b['rate'] + 1e-12 for a, b in zip(rows, rows[1:]))
    assert all(r['distortion'] > 0 for r in rows[:-1]) and rows[-1]['distortion'] is None
    assert res['rows'][1]['k'] == 3


def test_a_finished_stage_with_other_settings_is_not_reused(cfg):
    if not os.path.exists(os.path.join(cfg.out, 'runs', 'vdvae', 'latest-state.th')):
        table1.train_stage(cfg, 'vdvae', cfg.hps)
    assert table1.train_stage(cfg, 'vdvae', cfg.hps, ['--save_dir', 'elsewhere']).endswith('vdvae')
    with pytest.raises(common.ExperimentError, match=r"lr: [0-9.]+ -> 0\.5.*use another --out"):
        table1.train_stage(cfg, 'vdvae', cfg.hps, ['--lr', '0.5'])
