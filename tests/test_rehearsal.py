"""The paper-scale protocol's rehearsal (scripts/rehearse.sh, issue 29): made-up sources in each
dataset's download format (progcode_ext/experiments/rehearsal.py) go through that dataset's own
setup script to the splits training reads; the rehearsal names the dataset and stage it fails in.
The rehearsal itself (svhn end to end, then resumed) runs in CI's .ci/run; the slow suite
`python -m pytest -m rehearsal` rehearses all three (about 30 minutes on 2 cores), passing on the
environment's knobs (NGPU, LAUNCHER, LOOP, METRICS, ...; scripts/rehearse.sh)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from progcode_ext.experiments import rehearsal
from vdvae.data import VALID_COUNT, load_splits

REPO = Path(__file__).resolve().parents[1]
SETUP = {
    'svhn': ('svhn', lambda src, data: ['setup_svhn.sh', data]),
    'celeba64': ('celeba64', lambda src, data: ['setup_celeba64.sh', data,
                                                src / 'img_align_celeba']),
    'lsun64': ('lsun_bedroom64', lambda src, data: ['setup_lsun_bedroom64.sh', data, src / 'train',
                                                    src / 'val']),
}


@pytest.mark.slow
@pytest.mark.parametrize('dataset', sorted(SETUP))
def test_made_up_sources_convert_with_the_datasets_own_setup_script(tmp_path, dataset):
    name, setup = SETUP[dataset]
    data = tmp_path / 'data'
    src = data if dataset == 'svhn' else tmp_path / 'source'    # setup_svhn.sh looks in DATA_ROOT
    assert rehearsal.main([dataset, str(src)]) == 0
    if dataset == 'celeba64':
        data.mkdir()
        (data / 'list_eval_partition.txt').write_text(
            (src / 'list_eval_partition.txt').read_text())
    script, *args = setup(src, data)
    done = subprocess.run(['bash', str(REPO / 'scripts' / script), *map(str, args)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable))
    assert done.returncode == 0, done.stderr[-2000:]
    splits = load_splits(name, str(data))
    size = 32 if dataset == 'svhn' else 64
    n_valid = VALID_COUNT.get(name, rehearsal.N_TEST)
    assert [len(splits[k]) for k in ('train', 'valid', 'test')] == [
        rehearsal.N_TRAIN, n_valid, rehearsal.N_TEST]
    images = np.asarray(splits['train'][:8])
    assert images.shape == (8, size, size, 3) and images.dtype == np.uint8
    assert images.std() > 10          # smooth colour fields, not a constant


def test_blobs_are_smooth_seeded_images():
    a = rehearsal.blobs(np.random.default_rng(0), 3, 40, 30)
    assert a.shape == (3, 40, 30, 3) and a.dtype == np.uint8
    assert np.array_equal(a, rehearsal.blobs(np.random.default_rng(0), 3, 40, 30))
    # neighbouring pixels differ far less than pixels far apart: a field, not noise
    near = np.abs(np.diff(a.astype(int), axis=1)).mean()
    far = np.abs(a[:, :20].astype(int) - a[:, 20:].astype(int)).mean()
    assert near < far / 3


def test_the_sources_go_only_into_an_empty_folder(tmp_path, capsys):
    (tmp_path / 'keep.txt').write_text('mine')
    assert rehearsal.main(['svhn', str(tmp_path)]) == 2
    assert 'is not empty' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ['keep.txt']


def test_the_rehearsal_names_the_dataset_and_stage_it_fails_in(tmp_path):
    usage = subprocess.run(['bash', str(REPO / 'scripts' / 'rehearse.sh'), 'mnist'],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and 'usage:' in usage.stderr
    (tmp_path / 'svhn').write_text('a file where the dataset folder goes')
    failed = subprocess.run(['bash', str(REPO / 'scripts' / 'rehearse.sh'), 'svhn'],
                            capture_output=True, text=True,
                            env=dict(os.environ, OUT=str(tmp_path)))
    assert failed.returncode != 0
    assert 'rehearsal FAILED: svhn, at: making the source files' in failed.stderr


@pytest.mark.rehearsal
@pytest.mark.parametrize('dataset', sorted(SETUP))
def test_the_protocol_rehearses_end_to_end(tmp_path, dataset):
    env = dict(os.environ, OUT=str(tmp_path), TABLE2_TARGETS=os.environ.get('TABLE2_TARGETS',
                                                                           '0.0512'))
    done = subprocess.run(['bash', str(REPO / 'scripts' / 'rehearse.sh'), dataset],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f'rehearsal of {dataset} passed' in done.stdout
    reports = tmp_path / dataset / 'experiments'
    assert all((reports / name / 'report.md').stat().st_size > 0
               for name in ('table1', 'rd_curve', 'lpips_vs_mse', 'table2'))
