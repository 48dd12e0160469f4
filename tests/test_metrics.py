"""Metrics (issue 5): Frechet distance against closed forms, the stand-in classifier and its
FD-/PD- metrics, the FID / LPIPS wiring and their missing-weights messages, the entry points'
names, rate per latent group and the (R_k, D_k) profile."""
import math
import os
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from progcode_ext import metrics
from progcode_ext.latent_groups import progressive_blocks
from progcode_ext.masked import posterior_rate_k
from progcode_ext.metrics import MissingWeightsError, choice, inception, lpips_metric, standin
from progcode_ext.metrics.frechet import RunningGaussianStats, frechet_distance, \
    frechet_distance_from_features, gaussian_stats
from progcode_ext.metrics.rd_profile import rate_per_group, rd_profile
from vdvae import VAE, get_hparams
from vdvae.data import ImageArray, load_splits, make_preprocess
from vdvae.errors import ConfigError
from vdvae.evaluation import evaluate



pytestmark = pytest.mark.usefixtures('one_blas_thread')


# ------------------------------------------------------------------------------------------------
# Frechet distance


def closed_form_diag(mu1, s1, mu2, s2):
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2)))


def test_frechet_distance_closed_form_diagonal_and_rotated():
    rng = np.random.RandomState(0)
    d = 16
    mu1, mu2 = rng.randn(d), rng.randn(d)
    s1, s2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = closed_form_diag(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    # the same covariances in a rotated basis (S1 S2 then not symmetric): the distance is invariant
    q, _ = np.linalg.qr(rng.randn(d, d))
    value = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert value == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_one_dimension():
    # N(m1, a^2) vs N(m2, b^2): (m1 - m2)^2 + (a - b)^2
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9 + 1.5 ** 2)
    assert frechet_distance(np.array([0.5]), np.array([[1.0]]), np.array([0.5]),
                            np.array([[1.0]])) == pytest.approx(0, abs=1e-12)


def test_frechet_distance_symmetric_and_zero_for_identical_stats():
    rng = np.random.RandomState(1)
    a, b = rng.randn(500, 8), rng.randn(400, 8) @ rng.randn(8, 8) + 1
    (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1),
                                                               rel=1e-8)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9
    assert frechet_distance(mu1, s1, mu2, s2) > 1


def test_frechet_distance_from_samples_converges():
    rng = np.random.RandomState(2)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = np.array([1., 2., .5, 1.]), np.array([2., 1., .5, .25])
    exact = closed_form_diag(mu1, s1, mu2, s2)
    errors = []
    for n in (200, 200_000):
        x = mu1 + rng.randn(n, d) * np.sqrt(s1)
        y = mu2 + rng.randn(n, d) * np.sqrt(s2)
        errors.append(abs(frechet_distance_from_features(x, y) - exact))
    assert errors[1] < 0.02 * exact and errors[1] < errors[0]


def trace_sqrt_reference(s1, s2):
    """Tr((S1 S2)^(1/2)) = Tr((R S2 R)^(1/2)), R = S1^(1/2): symmetric, by eigenvalues."""
    w, v = np.linalg.eigh(s1)
    r = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    return np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()


def test_gaussian_stats_and_singular_covariances(monkeypatch):
    rng = np.random.RandomState(3)
    feats = rng.randn(50, 6).astype(np.float32)
    mu, sigma = gaussian_stats(feats)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (6, 6)
    np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False))
    # fewer samples than dimensions: singular covariances, still the right value
    (m1, s1), (m2, s2) = gaussian_stats(rng.randn(5, 20)), gaussian_stats(rng.randn(5, 20) + 1)
    exact = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_reference(s1, s2)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(exact, rel=1e-6)
    # a square root that is not finite: recomputed with eps * I added, with a warning
    from progcode_ext.metrics import frechet
    real_sqrtm, calls = frechet.linalg.sqrtm, []

    def failing_once(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)
    monkeypatch.setattr(frechet.linalg, 'sqrtm', failing_once)
    with pytest.warns(RuntimeWarning, match='singular'):
        value = frechet_distance(m1, s1, m2, s2)
    assert value == pytest.approx(exact, rel=1e-3)
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(20)) @ (s2 + 1e-6 * np.eye(20)))
    with pytest.raises(ValueError, match='different dimensions'):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match='imaginary'):          # not a covariance
        frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))


def test_running_stats_equal_the_stats_of_all_features():
    rng = np.random.RandomState(4)
    feats = 1e4 + rng.randn(1003, 7) @ rng.randn(7, 7)        # a large offset: cancellation
    acc = RunningGaussianStats()
    for start in range(0, 1003, 100):
        acc.update(feats[start:start + 100])
    mu, sigma = acc.stats()
    mu_all, sigma_all = gaussian_stats(feats)
    np.testing.assert_allclose(mu, mu_all, rtol=1e-12)
    np.testing.assert_allclose(sigma, sigma_all, rtol=1e-8, atol=1e-10)
    assert acc.n == 1003


# ------------------------------------------------------------------------------------------------
# The stand-in classifier (trained once per session, 3 epochs: a few seconds)


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('metrics_cache'))


@pytest.fixture(scope='session')
def mnist(cache_dir):
    splits = load_splits('mnist5k')
    model, info = standin.load_standin('mnist5k', cache_dir=cache_dir, epochs=3)
    return splits, model, info


def noisy(images, sigma, seed=0):
    x = torch.as_tensor(np.asarray(images)).float()
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


@pytest.mark.slow
def test_standin_classifier_is_accurate_and_cached(mnist, cache_dir):
    splits, model, info = mnist
    assert info['task'] == 'labels' and info['n_classes'] == 10
    assert info['test_accuracy'] > 0.8                  # chance: 0.1
    path = standin.standin_path('mnist5k', cache_dir)
    assert os.path.basename(path) == f'standin-mnist5k-v{standin.VERSION}.pt'
    blob = torch.load(path, weights_only=True)
    assert blob['info']['fingerprint'] == info['fingerprint']
    standin._LOADED.clear()                             # reload from the file, no retraining
    again, info2 = standin.load_standin('mnist5k', cache_dir=cache_dir, train_if_missing=False)
    assert info2 == info
    assert standin.accuracy(again, splits['test']) == pytest.approx(info['test_accuracy'])
    assert not any(f.endswith('.tmp') for f in os.listdir(cache_dir))


@pytest.mark.slow
def test_standin_fd_is_zero_for_same_data_and_grows_with_noise(mnist):
    splits, model, _ = mnist
    ref = standin.standin_features(model, splits['train'][list(range(1000))])
    test = splits['test'][list(range(500))]
    same = frechet_distance_from_features(standin.standin_features(model, test),
                                          standin.standin_features(model, test))
    assert abs(same) < 1e-6
    fds = [frechet_distance_from_features(
        standin.standin_features(model, noisy(test, s)), ref) for s in (0, 30, 80, 160)]
    assert all(a < b for a, b in zip(fds, fds[1:])), fds
    assert fds[-1] > 5 * fds[0]


@pytest.mark.slow
def test_standin_pd_zero_for_identical_and_monotone_in_noise(mnist):
    splits, model, _ = mnist
    x = splits['test'][list(range(64))]
    assert np.all(standin.standin_perceptual_distance(model, x, x) == 0)
    means = []
    for s in (10, 40, 100):
        d = standin.standin_perceptual_distance(model, x, noisy(x, s))
        assert d.shape == (64,) and np.all(d > 0)
        means.append(d.mean())
    assert means[0] < means[1] < means[2]


# ------------------------------------------------------------------------------------------------
# FID and LPIPS: missing weights / packages, and the wiring through stand-ins of the packages


def test_fid_missing_weights_file_names_it_and_how_to_get_it(tmp_path):
    path = tmp_path / inception.FID_WEIGHTS_FILE
    with pytest.raises(MissingWeightsError) as e:
        inception.load_inception(str(path))
    message = str(e.value)
    assert str(path) in message and inception.FID_WEIGHTS_URL in message
    assert '--fid_weights' in message
    path.write_bytes(b'not a torch file')
    with pytest.raises(MissingWeightsError, match='cannot be read'):
        inception.load_inception(str(path))


def test_fid_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pytorch_fid', None)      # import fails
    with pytest.raises(MissingWeightsError) as e:
        inception.load_inception(None)
    message = str(e.value)
    assert "pip install '.[eval]'" in message and 'pytorch-fid' in message
    assert inception.FID_WEIGHTS_FILE in message and inception.FID_WEIGHTS_URL in message
    assert '--fid_weights' in message


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_lpips_missing_weights_file_names_it_and_how_to_get_it(tmp_path, net):
    name, url = lpips_metric.LPIPS_BACKBONES[net]
    path = tmp_path / name
    with pytest.raises(MissingWeightsError) as e:
        lpips_metric.load_lpips(net, str(path))
    message = str(e.value)
    assert str(path) in message and url in message and '--lpips_weights' in message
    # a state dict, but not that file: a warning that it is another file (as for FID), then an
    # error (here the package is missing or the file does not fit the trunk)
    torch.save({'features.0.weight': torch.zeros(1)}, path)
    with pytest.warns(RuntimeWarning, match=f'sha256 starts with .* not {name[-12:-4]}'), \
            pytest.raises(MissingWeightsError):
        lpips_metric.load_lpips(net, str(path))


def test_lpips_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'lpips', None)
    with pytest.raises(MissingWeightsError) as e:
        lpips_metric.load_lpips('alex')
    message = str(e.value)
    assert "pip install '.[eval]'" in message and 'lpips' in message
    assert 'alexnet-owt-7be5be79.pth' in message and '--lpips_weights' in message


class FakeInception(nn.Module):
    """Stands in for pytorch_fid.inception.InceptionV3: same constructor contract (weights via the
    module-level load_state_dict_from_url(FID_WEIGHTS_URL)), [0, 1] inputs, resize to 299. A ReLU
    makes its 2048 features of different images span more than the 3 dimensions of their mean
    colours (tests/test_metrics_real.py runs the real network)."""
    BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}

    def __init__(self, output_blocks):
        super().__init__()
        assert list(output_blocks) == [3]
        self.proj = nn.Conv2d(3, 2048, 1)
        self.proj.load_state_dict(FAKE_FID.load_state_dict_from_url(FAKE_FID.FID_WEIGHTS_URL))

    def forward(self, x):
        assert x.shape[1] == 3 and 0 <= x.min() and x.max() <= 1
        x = nn.functional.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)
        x = nn.functional.adaptive_avg_pool2d(2 * x - 1, (4, 4))
        return [nn.functional.adaptive_avg_pool2d(torch.relu(self.proj(x)), (1, 1))]


FAKE_FID = types.ModuleType('pytorch_fid.inception')
FAKE_FID.FID_WEIGHTS_URL = inception.FID_WEIGHTS_URL
FAKE_FID.InceptionV3 = FakeInception


@pytest.fixture
def fake_pytorch_fid(monkeypatch, tmp_path):
    def no_network(url, *args, **kwargs):
        raise AssertionError('the weights should come from the local file')
    monkeypatch.setattr(FAKE_FID, 'load_state_dict_from_url', no_network, raising=False)
    package = types.ModuleType('pytorch_fid')
    package.inception = FAKE_FID
    monkeypatch.setitem(sys.modules, 'pytorch_fid', package)
    monkeypatch.setitem(sys.modules, 'pytorch_fid.inception', FAKE_FID)
    monkeypatch.setattr(inception, '_MODELS', {})
    torch.manual_seed(0)
    path = tmp_path / inception.FID_WEIGHTS_FILE
    torch.save(nn.Conv2d(3, 2048, 1).state_dict(), path)
    return str(path)


def network_features(model, images):
    """The feature network's own output for uint8 NHWC images: [0, 1], one channel repeated to 3
    (what the adapter must feed it), without the adapter's code."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).double().div(255).float()
    with torch.no_grad():
        return model(x.expand(-1, 3, -1, -1))[0].flatten(1).double().numpy()


def frechet_from_features_exact(f1, f2):
    """The Frechet distance of the Gaussian statistics of two feature sets, without a D x D square
    root: with Si = Xi^T Xi (Xi the centred features over sqrt(n_i - 1)), the non-zero eigenvalues
    of S1 S2 are those of (X1 X2^T)(X1 X2^T)^T, so Tr((S1 S2)^(1/2)) is the sum of the singular
    values of X1 X2^T."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m1, m2 = f1.mean(0), f2.mean(0)
    x1, x2 = (f1 - m1) / np.sqrt(len(f1) - 1), (f2 - m2) / np.sqrt(len(f2) - 1)
    return float(np.sum((m1 - m2) ** 2) + np.sum(x1 ** 2) + np.sum(x2 ** 2)
                 - 2 * np.linalg.svd(x1 @ x2.T, compute_uv=False).sum())


def test_frechet_from_features_exact_is_the_closed_form():
    rng = np.random.RandomState(5)
    a, b = rng.randn(40, 6), rng.randn(30, 6) @ rng.randn(6, 6) + 0.5
    assert frechet_from_features_exact(a, b) == pytest.approx(
        frechet_distance_from_features(a, b), rel=1e-9)


def test_fid_features_through_the_package_interface(fake_pytorch_fid, monkeypatch):
    images = torch.randint(0, 256, (5, 16, 16, 1), dtype=torch.uint8)
    with pytest.warns(RuntimeWarning, match='sha256'):          # not the real file
        model = inception.load_inception(fake_pytorch_fid)
    assert FAKE_FID.load_state_dict_from_url.__name__ == 'no_network'   # restored afterwards
    saved = torch.load(fake_pytorch_fid, weights_only=True)
    assert all(torch.equal(model.proj.state_dict()[k], saved[k]) for k in saved)
    assert not model.training
    grey = inception.inception_features(images, model, batch_size=2)
    rgb = inception.inception_features(images.repeat(1, 1, 1, 3), model)
    assert grey.shape == (5, 2048) and grey.dtype == np.float64
    expected = network_features(model, images)
    np.testing.assert_allclose(grey, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rgb, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(expected, axis=0).max() > 1e-2         # the images' features differ
    # no local file: the standard download, which fails here -> the file, the URL, the flag
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url',
                        lambda *a, **k: (_ for _ in ()).throw(OSError('no network')))
    with pytest.raises(MissingWeightsError) as e:
        inception.load_inception(None)
    assert inception.FID_WEIGHTS_FILE in str(e.value) and '--fid_weights' in str(e.value)


class FakeLPIPS(nn.Module):
    """Stands in for lpips.LPIPS: a trunk `net` made of slices whose children keep torchvision's
    feature indices, [-1, 1] inputs, (N, 1, 1, 1) outputs."""

    def __init__(self, net='alex', pretrained=True, pnet_rand=False, model_path=None,
                 verbose=True):
        super().__init__()
        if not pnet_rand:
            raise OSError('no network')                 # torchvision's download
        self.net = nn.Module()
        self.net.slice1 = nn.Sequential()
        self.net.slice1.add_module('0', nn.Conv2d(3, 4, 3))
        self.net.slice1.add_module('1', nn.ReLU())
        self.net.slice2 = nn.Sequential()
        self.net.slice2.add_module('2', nn.Conv2d(4, 4, 3))

    def forward(self, a, b):
        assert a.min() >= -1 and a.max() <= 1 and a.shape[1] == 3
        return (self.net.slice2(self.net.slice1(a)) -
                self.net.slice2(self.net.slice1(b))).pow(2).mean((1, 2, 3), keepdim=True)


@pytest.fixture
def fake_lpips(monkeypatch, tmp_path):
    module = types.ModuleType('lpips')
    module.LPIPS = FakeLPIPS
    monkeypatch.setitem(sys.modules, 'lpips', module)
    monkeypatch.setattr(lpips_metric, '_MODELS', {})
    torch.manual_seed(0)
    trunk = {'features.0.weight': torch.randn(4, 3, 3, 3), 'features.0.bias': torch.randn(4),
             'features.2.weight': torch.randn(4, 4, 3, 3), 'features.2.bias': torch.randn(4),
             'classifier.1.weight': torch.randn(2, 2)}
    path = tmp_path / 'trunk.pth'
    torch.save(trunk, path)
    prefix = metrics._common.sha256_prefix(path)
    name = f'alexnet-owt-{prefix}.pth'
    os.rename(path, tmp_path / name)
    monkeypatch.setitem(lpips_metric.LPIPS_BACKBONES, 'alex', (name, 'https://example/' + name))
    return str(tmp_path / name), trunk


def test_lpips_through_the_package_interface(fake_lpips):
    path, trunk = fake_lpips
    model = lpips_metric.load_lpips('alex', path)
    for name in ('0.weight', '0.bias'):
        assert torch.equal(model.net.slice1.state_dict()[name], trunk['features.' + name])
    for name in ('2.weight', '2.bias'):
        assert torch.equal(model.net.slice2.state_dict()[name], trunk['features.' + name])
    x = torch.randint(0, 256, (3, 12, 12, 1), dtype=torch.uint8)
    y = noisy(x, 30)
    d = lpips_metric.lpips_distance(x, y, model, batch_size=2)
    assert d.shape == (3,) and d.dtype == np.float64

    def unit(images):                  # [-1, 1], 3 channels: the package's inputs
        return torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).double().div(
            127.5).sub(1).float().expand(-1, 3, -1, -1)
    with torch.no_grad():
        expected = model(unit(x), unit(y)).flatten().double().numpy()
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-7)
    assert np.all(d > 0)
    assert np.all(lpips_metric.lpips_distance(x, x, model) == 0)
    with pytest.raises(MissingWeightsError, match='--lpips_weights'):     # download fails here
        lpips_metric.load_lpips('alex', None)


# ------------------------------------------------------------------------------------------------
# Entry points: names, choices, reference statistics


@pytest.fixture
def no_real_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pytorch_fid', None)
    monkeypatch.setitem(sys.modules, 'lpips', None)


@pytest.fixture
def lines(monkeypatch):
    """The lines the metrics log, each choice with its reason (none was logged before the test,
    so none is logged in short)."""
    monkeypatch.setattr(choice.CHOICES, 'last', {})
    return []


def test_choose_metric_takes_the_real_metrics_when_their_weights_are_given(fake_pytorch_fid,
                                                                            fake_lpips):
    with pytest.warns(RuntimeWarning, match='sha256'):      # not the published weights
        chosen = metrics.choose_metric(metrics.SAMPLE_QUALITY, 'mnist5k', fake_pytorch_fid,
                                       allow_standin=True)
    assert isinstance(chosen, metrics.Metric)
    assert (chosen.kind, chosen.name, chosen.standin) == ('sample_quality', 'FID', False)
    assert chosen.real_family == 'FID' and fake_pytorch_fid in chosen.reason
    assert chosen.fingerprint == 'inception-' + metrics._common.sha256_prefix(fake_pytorch_fid)
    images = torch.randint(0, 256, (3, 8, 8, 1), dtype=torch.uint8)
    assert chosen.compute(images).shape == (3, 2048)
    with pytest.raises(AttributeError):                 # frozen: a choice is never edited
        chosen.name = 'FD-mnist5k'
    path, _ = fake_lpips
    chosen = metrics.choose_metric(metrics.PERCEPTUAL, 'mnist5k', path, lpips_net='alex')
    assert (chosen.kind, chosen.name, chosen.standin) == ('perceptual', 'LPIPS-alex', False)
    assert chosen.real_family == 'LPIPS' and path in chosen.reason
    assert chosen.fingerprint == 'lpips-v0.1-alex-' + metrics._common.sha256_prefix(path)
    assert chosen.compute(images, images.flip(0)).shape == (3,)


@pytest.fixture
def fake_standin(monkeypatch):
    """load_standin without training: an untrained classifier and its info."""
    calls = []

    def load_standin(dataset, **kwargs):
        calls.append(dataset)
        return standin.StandinNet(1, 10), dict(test_accuracy=0.97, version=1, fingerprint='abc')
    monkeypatch.setattr(standin, 'load_standin', load_standin)
    return calls


@pytest.mark.parametrize('kind,real,standin_name', [('sample_quality', 'FID', 'FD-mnist5k'),
                                                    ('perceptual', 'LPIPS', 'PD-mnist5k')])
def test_choose_metric_uses_the_standin_only_when_allowed_and_says_why(
        kind, real, standin_name, no_real_packages, fake_standin):
    with pytest.raises(MissingWeightsError, match=f'allow_standin=True .*--allow_standin.*'
                       f'reports {standin_name}, not {real}'):
        metrics.choose_metric(kind, 'mnist5k')
    with pytest.raises(MissingWeightsError, match=f'{real} needs the package'):   # no fallback
        metrics.choose_metric(kind, 'mnist5k', allow_standin=True, metric='real')
    with pytest.raises(MissingWeightsError, match='no_such.pth'):   # a given file: no fallback
        metrics.choose_metric(kind, 'mnist5k', 'no_such.pth', allow_standin=True)
    assert fake_standin == []
    chosen = metrics.choose_metric(kind, 'mnist5k', allow_standin=True)
    assert (chosen.kind, chosen.name, chosen.standin, chosen.real_family) == \
        (kind, standin_name, True, real)
    assert chosen.reason.startswith(f'{real} unavailable: {real} needs the package')
    assert chosen.reason.endswith("of the project's mnist5k classifier (held-out accuracy 0.9700)")
    assert chosen.fingerprint == 'standin-v1-abc' and fake_standin == ['mnist5k']
    images = torch.randint(0, 256, (2, 32, 32, 1), dtype=torch.uint8)
    out = chosen.compute(images) if kind == 'sample_quality' else chosen.compute(images, images)
    assert out.shape == ((2, standin.FEATURE_DIM) if kind == 'sample_quality' else (2,))
    chosen = metrics.choose_metric(kind, 'mnist5k', metric='standin')
    assert chosen.name == standin_name and chosen.reason.startswith(
        'stand-in requested (metric="standin"); ')


def test_choose_metric_refuses_unknown_kinds_modes_and_options():
    with pytest.raises(ConfigError, match="kind must be one of .*'perceptual', 'sample_quality'"):
        metrics.choose_metric('fid', 'mnist5k')
    with pytest.raises(ConfigError, match="metric must be 'auto', 'real' or 'standin'"):
        metrics.choose_metric(metrics.SAMPLE_QUALITY, 'mnist5k', metric='FID')
    with pytest.raises(ConfigError, match='sample_quality metric takes no option lpips_net'):
        metrics.choose_metric(metrics.SAMPLE_QUALITY, 'mnist5k', lpips_net='vgg')


def test_each_choice_is_logged_with_its_reason_then_in_short(caplog):
    log, lines = choice.ChoiceLog(), []
    fid = metrics.Metric('sample_quality', 'FID', False, 'weights w', None, 'inception-1')
    fd = metrics.Metric('sample_quality', 'FD-x', True, 'FID unavailable', None, 'standin-1')
    pd = metrics.Metric('perceptual', 'PD-x', True, 'LPIPS unavailable', None, 'standin-1')
    log.log(fd, lines.append, '; 2 generated vs 3 reference images')
    log.log(fd, lines.append)
    log.log(pd, lines.append)
    log.log(fid, lines.append)
    log.log(fid, lines.append)
    log.log(fd, lines.append)
    assert lines == [
        'sample_quality: using FD-x (STAND-IN, not comparable with FID): FID unavailable; '
        '2 generated vs 3 reference images',
        'sample_quality: using FD-x (STAND-IN, not comparable with FID), as before',
        'perceptual: using PD-x (STAND-IN, not comparable with LPIPS): LPIPS unavailable',
        'sample_quality: using FID (the standard metric): weights w',
        'sample_quality: using FID (the standard metric), as before',
        'sample_quality: using FD-x (STAND-IN, not comparable with FID): FID unavailable']
    with caplog.at_level('INFO', logger='progcode.metrics'):   # no logprint: the logger
        choice.ChoiceLog().log(fid)
        choice.ChoiceLog().log(fd)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ('INFO', 'sample_quality: using FID (the standard metric): weights w'),
        ('WARNING', 'sample_quality: using FD-x (STAND-IN, not comparable with FID): '
                    'FID unavailable')]


@pytest.mark.slow
def test_entry_points_use_the_standin_only_when_allowed_and_say_so(mnist, cache_dir,
                                                                   no_real_packages, lines):
    splits, model, info = mnist
    gen, ref = splits['test'][list(range(200))], splits['train']
    with pytest.raises(MissingWeightsError, match='allow_standin'):
        metrics.sample_quality(gen, ref, 'mnist5k', cache_dir=cache_dir)
    with pytest.raises(MissingWeightsError, match='allow_standin'):
        metrics.perceptual_distance(gen, gen, 'mnist5k', cache_dir=cache_dir)
    with pytest.raises(MissingWeightsError, match='FID needs the package pytorch-fid'):  # real
        metrics.sample_quality(gen, ref, 'mnist5k', metric='real', allow_standin=True,
                               cache_dir=cache_dir)
    with pytest.raises(MissingWeightsError, match='no_such.pth'):   # a given file: no fallback
        metrics.sample_quality(gen, ref, 'mnist5k', fid_weights='no_such.pth',
                               allow_standin=True, cache_dir=cache_dir)
    fd, value = metrics.sample_quality(gen, ref, 'mnist5k', allow_standin=True,
                                       cache_dir=cache_dir, reference_split='train',
                                       n_reference=1000, logprint=lines.append)
    reference_1000 = ref[list(range(1000))]
    expected = frechet_distance_from_features(standin.standin_features(model, gen),
                                              standin.standin_features(model, reference_1000))
    assert fd == 'FD-mnist5k' and value == pytest.approx(expected, rel=1e-6) and value > 0
    assert lines[-1].startswith('sample_quality: using FD-mnist5k (STAND-IN, not comparable with '
                                'FID): FID unavailable')
    assert lines[-1].endswith('; 200 generated vs 1000 reference images')
    pd, d = metrics.perceptual_distance(gen, noisy(gen, 40), 'mnist5k', allow_standin=True,
                                        cache_dir=cache_dir, logprint=lines.append)
    assert pd == 'PD-mnist5k' and d.shape == (200,) and np.all(d > 0)
    assert lines[-1].startswith('perceptual: using PD-mnist5k (STAND-IN, not comparable with '
                                'LPIPS): LPIPS unavailable')
    for n in (fd, pd):
        assert 'FID' not in n and 'LPIPS' not in n
    metrics.sample_quality(gen, ref, 'mnist5k', allow_standin=True, cache_dir=cache_dir,
                           reference_split='train', n_reference=1000, logprint=lines.append)
    assert lines[-1] == ('sample_quality: using FD-mnist5k (STAND-IN, not comparable with FID), '
                         'as before')                     # the same choice again: in short


@pytest.mark.slow
def test_entry_points_pick_the_real_metrics_when_available(fake_pytorch_fid, fake_lpips, mnist,
                                                           cache_dir, lines):
    splits, _, _ = mnist
    gen, ref = splits['test'][list(range(20))], splits['train']
    with pytest.warns(RuntimeWarning, match='sha256'):      # the real Frechet distance: ~15 s here
        name, value = metrics.sample_quality(gen, ref, 'mnist5k', fid_weights=fake_pytorch_fid,
                                             allow_standin=True, n_reference=30,
                                             cache_dir=cache_dir, logprint=lines.append)
    # the value, from the network's own features of the 20 images and the first 30 references
    model = inception.load_inception(fake_pytorch_fid)         # the one loaded above
    f_gen, f_ref = network_features(model, gen), network_features(model, ref[list(range(30))])
    expected = frechet_from_features_exact(f_gen, f_ref)
    # the square root of a singular S1 S2 (20 and 30 samples in 2048 dimensions) is accurate to
    # ~1e-6 of the covariances' scale (their traces, here ~60x the distance), not of the distance
    scale = np.var(f_gen, axis=0, ddof=1).sum() + np.var(f_ref, axis=0, ddof=1).sum()
    assert name == 'FID' and value == pytest.approx(expected, abs=1e-5 * scale, rel=0)
    assert expected > 1e-3 * scale
    assert lines[-1].startswith('sample_quality: using FID (the standard metric): ')
    assert lines[-1].endswith('; 20 generated vs 30 reference images')
    other = noisy(gen, 40)
    name, d = metrics.perceptual_distance(gen, other, 'mnist5k', lpips_weights=fake_lpips[0],
                                          cache_dir=cache_dir)
    expected = lpips_metric.lpips_distance(gen, other, lpips_metric.load_lpips('alex',
                                                                             fake_lpips[0]))
    assert name == 'LPIPS-alex' and d.shape == (20,) and np.all(d > 0)
    np.testing.assert_array_equal(d, expected)
    name, _ = metrics.sample_quality(gen, ref, 'mnist5k', metric='standin', n_reference=30,
                                     cache_dir=cache_dir, logprint=lines.append)
    assert name == 'FD-mnist5k' and 'stand-in requested' in lines[-1]


def test_reference_stats_are_cached_per_metric_dataset_split_and_n(tmp_path):
    calls = []

    def features(images):
        calls.append(len(images))
        return np.asarray(images, dtype=np.float64).reshape(len(images), -1)[:, :4]

    images = np.random.RandomState(0).randint(0, 256, (40, 4, 4, 1)).astype(np.uint8)
    a = metrics.reference_stats('FD-x', 'net1', features, images, 'x', 'train', 30, str(tmp_path))
    b = metrics.reference_stats('FD-x', 'net1', features, images, 'x', 'train', 30, str(tmp_path))
    assert calls == [30] and all(np.array_equal(u, v) for u, v in zip(a, b))
    assert os.path.isfile(tmp_path / 'refstats' / 'FD-x-x-train-30.npz')
    metrics.reference_stats('FD-x', 'net2', features, images, 'x', 'train', 30, str(tmp_path))
    metrics.reference_stats('FD-x', 'net2', features, images, 'x', 'train', 100, str(tmp_path))
    assert calls == [30, 30, 40]                    # another network; all 40 when n is larger
    metrics.reference_stats('FD-x', 'net2', features, images, 'x', None, 30, str(tmp_path))
    assert calls[-1] == 30 and len(calls) == 4      # no split name: no cache


@pytest.mark.slow
def test_generated_images_from_a_sampler(mnist, cache_dir, no_real_packages, lines):
    splits, _, _ = mnist
    pool = splits['test'][list(range(100))].numpy()
    drawn = []

    def sampler(n):
        drawn.append(n)
        return pool[sum(drawn) - n:sum(drawn)]
    name, _ = metrics.sample_quality(sampler, splits['train'], 'mnist5k', allow_standin=True,
                                     n_samples=70, n_reference=200, cache_dir=cache_dir,
                                     logprint=lines.append)
    assert name == 'FD-mnist5k' and sum(drawn) == 70
    assert lines[-1].endswith('; 70 generated vs 200 reference images')
    with pytest.raises(TypeError, match='uint8'):
        metrics.sample_quality(lambda n: np.zeros((n, 32, 32, 1), np.float32), splits['train'],
                               'mnist5k', allow_standin=True, n_samples=4, n_reference=200,
                               cache_dir=cache_dir)


# ------------------------------------------------------------------------------------------------
# Rate per latent group, (R_k, D_k)

ARCH = dict(width=16, zdim=4, num_mixtures=3, enc_blocks='32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1', n_batch=4)


@pytest.fixture(scope='module')
def tiny_vae():
    H = get_hparams('mnist5k', **ARCH)
    torch.manual_seed(0)
    model = VAE(H)
    images = load_splits('mnist5k')['valid'][list(range(10))].numpy()
    return H, model, ImageArray(images), make_preprocess('mnist5k')


def test_rate_per_group_sums_to_the_models_rate(tiny_vae):
    H, model, data, prep = tiny_vae
    torch.manual_seed(1)
    rates = rate_per_group(model, data, prep, 'cpu', n_batch=H.n_batch)
    torch.manual_seed(1)                              # the same batches and posterior draws
    stats = evaluate(H, model, data, prep, 'cpu')
    assert rates['n_examples'] == 10
    assert rates['total'] == pytest.approx(stats['rate'], rel=1e-5)
    assert rates['block_res'] == [b.base for b in model.decoder.dec_blocks]
    assert sum(rates['per_res'].values()) == pytest.approx(rates['total'])
    assert sorted(rates['per_res']) == [1, 4, 8, 16, 32]
    assert rates['total_bits'] == pytest.approx(rates['total'] / math.log(2))
    assert all(v >= 0 for v in rates['per_block'])


def test_rd_profile_rates_and_probe_signature(tiny_vae):
    H, model, data, prep = tiny_vae
    asked = []

    def probe(k, res):
        asked.append((k, res))
        return 0.1 / k
    torch.manual_seed(2)
    profile = rd_profile(model, data, prep, 'cpu', distortion_fn=probe, n_batch=H.n_batch)
    assert [p['res'] for p in profile] == [1, 4, 8, 16, 32]
    assert [p['k'] for p in profile] == [progressive_blocks(H, r) for r in (1, 4, 8, 16, 32)]
    assert asked == [(p['k'], p['res']) for p in profile]
    assert [p['distortion'] for p in profile] == [0.1 / p['k'] for p in profile]
    rates = [p['rate'] for p in profile]
    assert all(a <= b for a, b in zip(rates, rates[1:]))
    # R_K at the paper's split (res 4) = masked.posterior_rate_k under the same posterior draws
    # (one batch: posterior_rate_k draws only K blocks' noise, so a second batch's would differ)
    k = progressive_blocks(H)
    torch.manual_seed(3)
    r_k = rd_profile(model, data, prep, 'cpu', n_batch=10)[1]
    torch.manual_seed(3)
    with torch.no_grad():
        direct = posterior_rate_k(model.encoder, model.decoder, k,
                                  prep(data[list(range(10))], 'cpu')[0])[1].mean().item()
    assert r_k['k'] == k and r_k['rate'] == pytest.approx(direct, rel=1e-5)
    assert rd_profile(model, data, prep, 'cpu')[0]['distortion'] is None
