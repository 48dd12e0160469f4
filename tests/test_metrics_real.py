"""FID and LPIPS through the real pytorch-fid and lpips packages (issue 21).

No pretrained weights can be had here, so random networks in the packages' own layouts are
written to local files, then loaded two ways: through the project's adapters (`fid_weights=`,
`lpips_weights=`, `lpips_linear_weights=`: the --fid_weights / --lpips_weights flags), and by the
packages themselves, unpatched, from a torch hub cache that holds the same file under its standard
name (where pytorch-fid and torchvision look before downloading). Both must give the same networks,
features, Frechet distances and LPIPS distances. Downloads are refused: a test that reached the
network would fail.

Skipped as a whole where pytorch-fid, lpips or a torchvision that works with this torch cannot be
imported (the CI environment); `pip install '.[eval]'` runs them.
"""
import importlib
import os

import numpy as np
import pytest
import torch


def _import_or_skip(name):
    """The module, or a skip of this file that says why (a torchvision built for another torch
    fails with errors other than ImportError, hence not pytest.importorskip)."""
    try:
        return importlib.import_module(name)
    except Exception as e:
        pytest.skip(f"{name} cannot be imported here ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:150] if str(e) else ''}); pip install '.[eval]' "
                    f"(pytorch-fid, lpips and a torchvision matching torch {torch.__version__}) to "
                    f"test the real packages", allow_module_level=True)


torchvision = _import_or_skip('torchvision')
pytorch_fid_inception = _import_or_skip('pytorch_fid.inception')
fid_score = _import_or_skip('pytorch_fid.fid_score')
lpips = _import_or_skip('lpips')

from progcode_ext import metrics                                       # noqa: E402
from progcode_ext.experiments.rehearsal import (random_alexnet_weights,  # noqa: E402
                                                random_fid_weights)
from progcode_ext.metrics import MissingWeightsError, inception, lpips_metric  # noqa: E402
from progcode_ext.metrics._common import sha256_prefix                 # noqa: E402
from progcode_ext.metrics.frechet import frechet_distance              # noqa: E402


pytestmark = pytest.mark.usefixtures('one_blas_thread')


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (its checkpoints/ folder is returned), downloads refused, and the
    adapters' model caches emptied: the packages find only what a test puts there."""
    folder = tmp_path / 'hub'
    (folder / 'checkpoints').mkdir(parents=True)
    monkeypatch.setattr(torch.hub, '_hub_dir', str(folder))

    def no_download(url, *args, **kwargs):
        raise OSError(f'the tests do not download ({url})')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    monkeypatch.setattr(inception, '_MODELS', {})
    monkeypatch.setattr(lpips_metric, '_MODELS', {})
    return folder / 'checkpoints'


def rng_images(n, size, channels, seed):
    """uint8 NHWC images: smooth random patterns plus noise (so that features differ)."""
    rng = np.random.RandomState(seed)
    coarse = rng.uniform(0, 255, (n, 4, 4, channels))
    x = np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)
    return np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8)


def unit_nchw(images, channels=3):
    """uint8 NHWC -> float32 NCHW in [0, 1], one channel repeated: written here, not the adapter's
    helper."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double() / 255
    return x.float().expand(-1, channels, -1, -1).contiguous()


def same_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------
# FID: pytorch-fid's InceptionV3


@pytest.fixture(scope='module')
def fid_file(tmp_path_factory):
    """A random FID Inception in pytorch-fid's own layout (the rehearsal's maker)."""
    return random_fid_weights(tmp_path_factory.mktemp('fid') / 'random-inception.pth')


def fid_reference_model(fid_file, hub):
    """pytorch-fid's InceptionV3 for the 2048-d features, as the package builds it: its weights
    from the hub cache under the standard name."""
    os.link(fid_file, hub / inception.FID_WEIGHTS_FILE)
    pfi = pytorch_fid_inception
    return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()


def fid_reference_features(model, images):
    with torch.no_grad():
        return model(unit_nchw(images))[0].squeeze(3).squeeze(2).double().numpy()


def test_fid_features_equal_pytorch_fids_with_the_same_weights(fid_file, hub):
    grey, rgb = rng_images(6, 32, 1, seed=0), rng_images(5, 24, 3, seed=1)
    with pytest.warns(RuntimeWarning, match='sha256 starts with'):       # not the real file
        model = inception.load_inception(str(fid_file))
    reference = fid_reference_model(fid_file, hub)
    assert same_state(model, reference) and not model.training
    for images in (grey, rgb):
        ours = inception.inception_features(images, model, batch_size=4)
        expected = fid_reference_features(reference, images)
        assert ours.shape == (len(images), 2048) and ours.dtype == np.float64
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)
        assert np.ptp(expected, axis=0).max() > 0.05      # the images' features differ
    # without a local file: pytorch-fid's standard download, here the hub cache's copy
    cached = inception.load_inception(None)
    assert cached is not model and same_state(cached, reference)


@pytest.mark.slow
def test_fid_value_equals_pytorch_fids(fid_file, hub, tmp_path):
    """sample_quality's FID = pytorch_fid.fid_score.calculate_frechet_distance of the statistics of
    pytorch-fid's own features (generated: all 12; reference: the first 16 of 20). Two square roots
    of 2048 x 2048 matrices: ~30 s here."""
    generated, reference_images = rng_images(12, 32, 1, seed=2), rng_images(20, 32, 1, seed=3)
    reference_images[:16] //= 2                         # darker: a clear distance
    with pytest.warns(RuntimeWarning, match='sha256 starts with'):
        name, value = metrics.sample_quality(generated, reference_images, 'svhn',
                                             fid_weights=str(fid_file), n_reference=16,
                                             cache_dir=str(tmp_path), logprint=lambda line: None)
    model = fid_reference_model(fid_file, hub)
    f_gen = fid_reference_features(model, generated)
    f_ref = fid_reference_features(model, reference_images[:16])
    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in (f_gen, f_ref)]
    expected = fid_score.calculate_frechet_distance(*stats[0], *stats[1])
    # singular covariances (12 and 16 samples in 2048 dimensions): both square roots are accurate
    # to ~1e-6 of the covariances' scale, their traces
    scale = np.trace(stats[0][1]) + np.trace(stats[1][1])
    assert name == 'FID' and value == pytest.approx(expected, abs=1e-5 * scale, rel=0)
    assert expected > 0.1 * scale


@pytest.mark.parametrize('d,seed', [(2, 0), (7, 1), (64, 2)])
def test_frechet_distance_equals_pytorch_fids_formula(d, seed):
    rng = np.random.RandomState(seed)
    a, b = rng.randn(3 * d, d), rng.randn(2 * d + 3, d) @ rng.randn(d, d)
    mu1, mu2 = rng.randn(d), rng.randn(d) * 2
    s1, s2 = a.T @ a / len(a), b.T @ b / len(b)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        float(fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)), rel=1e-9, abs=1e-9)


def test_fid_weights_missing_or_not_fitting_pytorch_fid(hub, tmp_path):
    # nothing local, nothing cached, no download: the file, the URL and the flag
    with pytest.raises(MissingWeightsError) as e:
        inception.load_inception(None)
    message = str(e.value)
    assert inception.FID_WEIGHTS_FILE in message and '--fid_weights' in message
    assert 'cannot get the FID Inception weights' in message
    # torchvision's own Inception v3 (1000 classes, its own blocks): not pytorch-fid's network
    torch.manual_seed(0)
    wrong = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    path = tmp_path / 'inception_v3_google.pth'
    torch.save(wrong.state_dict(), path)
    with pytest.warns(RuntimeWarning, match='sha256'), \
            pytest.raises(MissingWeightsError, match="does not fit pytorch-fid's Inception"):
        inception.load_inception(str(path))


# ------------------------------------------------------------------------------------------------
# LPIPS: the lpips package with torchvision's trunks


def named_like_torchvision(state, folder, net):
    """Save a trunk state dict as torchvision's file name with the file's own sha256 prefix (the
    adapter checks the prefix); returns (path, the LPIPS_BACKBONES entry for it)."""
    stem = LPIPS_STEMS[net]
    tmp = folder / f'{stem}-tmp.pth'
    torch.save(state, tmp)
    name = f'{stem}-{sha256_prefix(tmp)}.pth'
    os.rename(tmp, folder / name)
    return folder / name, (name, 'https://download.pytorch.org/models/' + name)


LPIPS_STEMS = {'alex': 'alexnet-owt', 'vgg': 'vgg16'}


@pytest.fixture(scope='module')
def alex_file(tmp_path_factory):
    """A random torchvision AlexNet, whole (features and classifier, as torchvision's file)."""
    folder = tmp_path_factory.mktemp('alex')
    state = torch.load(random_alexnet_weights(folder / 'random.pth'), weights_only=True)
    return named_like_torchvision(state, folder, 'alex')


@pytest.fixture
def random_lpips_linear(tmp_path):
    """Random LPIPS v0.1 linear layers for the alex trunk, in the layout of the package's own
    file (lpips/weights/v0.1/alex.pth: lin0.model.1.weight ... lin4.model.1.weight)."""
    torch.manual_seed(3)
    lins = {k: torch.rand_like(v) for k, v in
            lpips.LPIPS(net='alex', pretrained=False, pnet_rand=True,
                        verbose=False).state_dict().items() if k.startswith('lin') and
            not k.startswith('lins.')}
    assert sorted(lins) == [f'lin{i}.model.1.weight' for i in range(5)]
    path = tmp_path / 'alex-linear.pth'
    torch.save(lins, path)
    return path


def lpips_reference(alex_file, hub, **kwargs):
    """lpips.LPIPS('alex') as the package builds it: torchvision's pretrained AlexNet from the hub
    cache under its standard name."""
    os.link(alex_file, hub / lpips_metric.LPIPS_BACKBONES['alex'][0])
    return lpips.LPIPS(net='alex', verbose=False, **kwargs).eval()


def lpips_reference_distances(model, x, y):
    def inputs(images):                        # [-1, 1]
        return unit_nchw(images) * 2 - 1
    with torch.no_grad():
        return model(inputs(x), inputs(y)).flatten().double().numpy()


def test_lpips_alex_equals_the_lpips_package_with_the_same_weights(alex_file, hub, monkeypatch,
                                                                  random_lpips_linear):
    path, entry = alex_file
    reference = lpips_reference(path, hub)              # before the table is changed
    monkeypatch.setitem(lpips_metric.LPIPS_BACKBONES, 'alex', entry)
    model = lpips_metric.load_lpips('alex', str(path))
    assert same_state(model, reference) and not model.training
    x, y = rng_images(5, 64, 1, seed=4), rng_images(5, 64, 1, seed=5)
    d = lpips_metric.lpips_distance(x, y, model, batch_size=2)
    expected = lpips_reference_distances(reference, x, y)
    assert d.shape == (5,) and d.dtype == np.float64
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-7)
    assert np.ptp(expected) > 1e-3 * expected.mean() > 0
    rgb = rng_images(3, 64, 3, seed=6)
    np.testing.assert_allclose(lpips_metric.lpips_distance(rgb, rgb[::-1].copy(), model),
                               lpips_reference_distances(reference, rgb, rgb[::-1].copy()),
                               rtol=1e-5, atol=1e-7)
    assert np.all(lpips_metric.lpips_distance(x, x, model) == 0)
    # through the entry point
    name, values = metrics.perceptual_distance(x, y, 'svhn', lpips_weights=str(path),
                                               logprint=lambda line: None)
    assert name == 'LPIPS-alex'
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)
    # other linear layers (--lpips_linear_weights): the package's model_path
    with_lins = lpips_metric.load_lpips('alex', str(path), str(random_lpips_linear))
    expected_lins = lpips_reference_distances(
        lpips.LPIPS(net='alex', model_path=str(random_lpips_linear), verbose=False).eval(), x, y)
    np.testing.assert_allclose(lpips_metric.lpips_distance(x, y, with_lins), expected_lins,
                               rtol=1e-5, atol=1e-7)
    assert np.all(np.abs(expected_lins - expected) > 1e-3 * expected)
    # without a local file: torchvision's standard download, here the hub cache's copy
    cached = lpips_metric.load_lpips('alex', None)
    assert same_state(cached, reference)


def test_lpips_vgg_trunk_is_torchvisions_vgg16(tmp_path, hub, monkeypatch):
    """The VGG trunk from a --lpips_weights file (its features only: the whole vgg16 file is
    528 MB) computes torchvision's VGG-16 features at the five layers LPIPS uses (relu1_2, relu2_2,
    relu3_3, relu4_3, relu5_3: indices 3, 8, 15, 22, 29)."""
    torch.manual_seed(4)
    vgg = torchvision.models.vgg16(weights=None).features.eval()
    state = {f'features.{k}': v for k, v in vgg.state_dict().items()}
    path, entry = named_like_torchvision(state, tmp_path, 'vgg')
    monkeypatch.setitem(lpips_metric.LPIPS_BACKBONES, 'vgg', entry)
    model = lpips_metric.load_lpips('vgg', str(path))
    x, y = rng_images(2, 32, 3, seed=7), rng_images(2, 32, 3, seed=8)
    with torch.no_grad():
        h = model.scaling_layer(unit_nchw(x) * 2 - 1)
        trunk, expected = model.net(h), []
        for i, layer in enumerate(vgg):
            h = layer(h)
            if i in (3, 8, 15, 22, 29):
                expected.append(h)
    assert len(trunk) == len(expected) == 5
    for ours, theirs in zip(trunk, expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    d = lpips_metric.lpips_distance(x, y, model)
    np.testing.assert_allclose(d, lpips_reference_distances(model, x, y), rtol=1e-5, atol=1e-7)
    assert np.all(d > 0)


def test_lpips_weights_missing_or_not_fitting_the_trunk(alex_file, hub, monkeypatch):
    # nothing local, nothing cached, no download: the file, the URL and the flag
    with pytest.raises(MissingWeightsError) as e:
        lpips_metric.load_lpips('alex', None)
    message = str(e.value)
    assert 'alexnet-owt-7be5be79.pth' in message and '--lpips_weights' in message
    # a trunk of other values (a rehearsal's random one): it computes, with a warning, as for FID
    path, _ = alex_file
    with pytest.warns(RuntimeWarning, match='sha256 starts with .* not 7be5be79'):
        model = lpips_metric.load_lpips('alex', str(path))
    x = rng_images(2, 32, 1, seed=9)
    assert np.all(lpips_metric.lpips_distance(x, x[::-1].copy(), model) > 0)
    # an AlexNet file given for the VGG trunk (named with its own prefix, so only the fit fails)
    path, (name, _) = alex_file
    entry = (name.replace('alexnet-owt', 'vgg16'), 'https://example/')
    vgg_path = path.parent / entry[0]
    if not vgg_path.exists():
        os.link(path, vgg_path)
    monkeypatch.setitem(lpips_metric.LPIPS_BACKBONES, 'vgg', entry)
    with pytest.raises(MissingWeightsError, match='does not fit the LPIPS trunk'):
        lpips_metric.load_lpips('vgg', str(vgg_path))
