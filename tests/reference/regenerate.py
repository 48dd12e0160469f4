"""Regenerate every file of tests/reference/ by running upstream VDVAE's own code.

    python tests/reference/regenerate.py --vdvae_root vdvae_upstream --out /tmp/ref \
        --compare tests/reference

The checkout's modules (hps.py, vae.py, vae_helpers.py, data.py) are imported unmodified and do all
the computing: upstream's argparse parser and presets give the hyperparameters, `data.set_up_data`
gives the image geometry and the preprocessing, `vae.VAE` and the helpers of `vae_helpers` give
every number. This script only chooses the inputs (seeded), calls upstream's functions and writes
what they return. Around the checkout it supplies what a CPU machine may lack: `.cuda()` as a no-op
(progcode_ext.upstream.substitutes.install_cpu, only without a CUDA device), empty placeholder
modules for torchvision and scikit-learn when they are not installed (the loaders that need them
are replaced by ones returning the synthetic images: no dataset is read), and nothing else.

`--compare DIR` then checks the written files against those in DIR, saying of each whether its
bytes, its contents, or its contents within RTOL/ATOL (floating-point values only; see below) are
equal, and exits 1 if any differs beyond that. tests/reference/README.md says what each file holds.
"""
import argparse
import contextlib
import importlib
import io
import json
import math
import os
import sys
import types
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PRESETS = ('cifar10', 'imagenet32', 'imagenet64', 'ffhq256', 'ffhq1024')
UPSTREAM_MODULES = ('hps', 'vae_helpers', 'vae', 'data')
# The tiny configuration: upstream's flags on top of its argparse defaults (no preset).
TINY8_FLAGS = ['--hps', '', '--dataset', 'cifar10', '--width', '32', '--zdim', '4',
               '--num_mixtures', '2', '--enc_blocks', '8x3', '--dec_blocks', '8x3',
               '--bottleneck_multiple', '0.25']
TINY8_IMAGE_SIZE = 8
BATCH = 4
INPUT_SEED = 1234           # torch.Generator seed of the tiny model's input pixels
INIT_SEED = 0               # torch.manual_seed before constructing the model
PERTURB_SEED = 2024         # torch.Generator seed of the weight perturbation
PERTURB_SCALE = 0.05
FORWARD_SEED = 1            # torch.manual_seed before each posterior pass
UNCOND_SEED = 7             # ... before each unconditional call
MANUAL_SEED = 11            # ... before each call with fixed latents
MANUAL_T = 0.1
UNIT_SEED = 99              # torch.Generator seed of the helpers' inputs
GAUSS_SEED = 5
DMOL_SEED = 6
DMOL_MIXTURES = 3


# ----------------------------------------------------------------------------------------------
# Importing the checkout

def _stand_in(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__path__ = []
    return module


def _missing(name):
    try:
        importlib.import_module(name)
        return False
    except ImportError:
        return True


def load_upstream(root, with_data=False):
    """Upstream's modules imported from `root`, as a namespace (hps, vae_helpers, vae[, data]).

    They are imported under their own names (vae.py does `from vae_helpers import ...`), then
    taken out of sys.modules again, with whatever held those names before put back: the caller
    keeps the module objects, and other code importing `vae` or `hps` is not affected."""
    root = str(Path(root).resolve())
    names = UPSTREAM_MODULES if with_data else UPSTREAM_MODULES[:3]
    for name in names:
        if not os.path.isfile(os.path.join(root, name + '.py')):
            raise FileNotFoundError(f'{root} holds no {name}.py: not an openai/vdvae checkout '
                                    '(to fill the submodule: git submodule update --init '
                                    'vdvae_upstream)')
    stand_ins = {}
    if with_data:
        from progcode_ext.upstream.substitutes import install_cpu
        install_cpu()                   # data.py's preprocessing calls .cuda()
        if _missing('torchvision'):
            transforms = _stand_in('torchvision.transforms', ToTensor=lambda: None)
            datasets = _stand_in('torchvision.datasets', ImageFolder=None)
            stand_ins.update({'torchvision': _stand_in('torchvision', datasets=datasets,
                                                        transforms=transforms),
                              'torchvision.datasets': datasets,
                              'torchvision.transforms': transforms})
        if _missing('sklearn'):
            selection = _stand_in('sklearn.model_selection', train_test_split=None)
            stand_ins.update({'sklearn': _stand_in('sklearn', model_selection=selection),
                              'sklearn.model_selection': selection})
    taken = set(names) | set(stand_ins)
    before = {name: sys.modules.pop(name) for name in list(sys.modules) if name in taken}
    sys.modules.update(stand_ins)
    sys.path.insert(0, root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')         # torch.jit.script's deprecation warning
            modules = {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(root)
        for name in taken:
            sys.modules.pop(name, None)
        sys.modules.update(before)
    for name, module in modules.items():
        if os.path.dirname(os.path.abspath(module.__file__)) != root:
            raise RuntimeError(f'{name} was imported from {module.__file__}, not from {root}')
    return types.SimpleNamespace(root=root, **modules)


def upstream_hparams(up, flags):
    """Upstream's Hyperparams from its own parser: argparse defaults, then the presets named by
    --hps as defaults, then the flags (hps.parse_args_and_update_hparams)."""
    parser = up.hps.add_vae_arguments(argparse.ArgumentParser())
    H = up.hps.Hyperparams()
    up.hps.parse_args_and_update_hparams(H, parser, s=flags)
    return H


def set_up_data(up, H, images):
    """Upstream's data.set_up_data(H) with its loaders replaced by ones that return `images`
    (uint8 NHWC) as every split: it sets H.image_size / H.image_channels from H.dataset and
    returns upstream's preprocessing function."""
    def three_splits(*args, **kwargs):
        return images, images, images

    def cifar10(*args, **kwargs):
        return (images, None), (images, None), (images, None)
    replaced = {'imagenet32': three_splits, 'imagenet64': three_splits, 'ffhq256': three_splits,
                'ffhq1024': three_splits, 'cifar10': cifar10,
                'ImageFolder': lambda root, transform=None: root}
    saved = {name: getattr(up.data, name) for name in replaced}
    for name, fn in replaced.items():
        setattr(up.data, name, fn)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            H, _, _, preprocess = up.data.set_up_data(H)
    finally:
        for name, fn in saved.items():
            setattr(up.data, name, fn)
    return H, preprocess


# ----------------------------------------------------------------------------------------------
# What is recorded

def counts(model):
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    n = lambda m: sum(p.numel() for p in m.parameters())
    return {'n_params': n(model), 'n_params_encoder': n(model.encoder),
            'n_params_decoder': n(model.decoder), 'n_conv2d': len(convs),
            'n_conv3x3': sum(c.kernel_size == (3, 3) for c in convs),
            'n_conv1x1': sum(c.kernel_size == (1, 1) for c in convs),
            'n_enc_blocks': len(model.encoder.enc_blocks),
            'n_dec_blocks': len(model.decoder.dec_blocks),
            'n_state_dict_tensors': len(model.state_dict())}


def key_listing(model):
    return ''.join(f'{k}\t{tuple(v.shape)}\n' for k, v in model.state_dict().items())


def stats_floats(stats):
    return {k: float(v) for k, v in stats.items()}


def perturb(model, seed=PERTURB_SEED, scale=PERTURB_SCALE):
    """Add scale * N(0, 1) from a Generator seeded `seed` to every state_dict tensor, in order
    (at init the prior path outputs exact zeros, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            value.add_(scale * torch.randn(value.shape, generator=g))


def tiny8(up, folder):
    """Write init_model.th, model.th, keys.txt and reference.pt of the tiny configuration into
    `folder`; returns its part of summary.json."""
    H = upstream_hparams(up, TINY8_FLAGS)
    pixels = torch.randint(0, 256, (BATCH, TINY8_IMAGE_SIZE, TINY8_IMAGE_SIZE, 3),
                           generator=torch.Generator().manual_seed(INPUT_SEED)).to(torch.uint8)
    H, preprocess = set_up_data(up, H, pixels.numpy())
    H.image_size = TINY8_IMAGE_SIZE               # cifar10's preprocessing, 8x8 images
    inp, target = (t.cpu() for t in preprocess([pixels]))

    torch.manual_seed(INIT_SEED)
    model = up.vae.VAE(H)
    model.eval()
    torch.save(model.state_dict(), folder / 'init_model.th')
    (folder / 'keys.txt').write_text(key_listing(model))
    with torch.no_grad():
        torch.manual_seed(FORWARD_SEED)
        init_stats = stats_floats(model(inp, target))
    perturb(model)
    torch.save(model.state_dict(), folder / 'model.th')

    dec = model.decoder
    n = len(dec.dec_blocks)
    ref = {'input_uint8': pixels, 'inp': inp, 'target': target}
    with torch.no_grad(), np.errstate(divide='ignore'):        # upstream takes log(t) of t=0
        torch.manual_seed(FORWARD_SEED)
        ref['stats'] = model(inp, target)
        torch.manual_seed(FORWARD_SEED)
        activations = model.encoder(inp)
        px_z, block_stats = dec(activations, get_latents=True)
        ref['encoder_activations'] = dict(activations)
        ref['dmol_params'] = dec.out_net(px_z)
        ref['px_z'] = px_z
        ref['distortion_per_example'] = dec.out_net.nll(px_z, target)
        ref['kl_per_block'] = [s['kl'] for s in block_stats]
        ref['z_per_block'] = [s['z'] for s in block_stats]
        ref['kl_sum_per_block'] = torch.stack([s['kl'].sum(dim=(1, 2, 3)) for s in block_stats], 1)

        ref['uncond'] = {}
        temperatures = {'t_none': None, 't_1.0': 1.0, 't_0.5': 0.5, 't_0.0': 0.0,
                        't_list': [0.1 + 0.8 * i / (n - 1) for i in range(n)]}
        for key, t in temperatures.items():
            torch.manual_seed(UNCOND_SEED)
            out = dec.forward_uncond(BATCH, t)
            torch.manual_seed(UNCOND_SEED)
            samples = torch.from_numpy(model.forward_uncond_samples(BATCH, t))
            case = {'t': t, 'samples_uint8': samples, 'px_z_sum': out.sum().item(),
                    'px_z_abs_sum': out.abs().sum().item()}
            if key in ('t_1.0', 't_list'):
                case['px_z'] = out
            ref['uncond'][key] = case

        torch.manual_seed(FORWARD_SEED)
        latents = [s['z'] for s in model.forward_get_latents(inp)]
        ref['manual_latents'] = {}
        for k in (0, 1, n // 2, n):
            torch.manual_seed(MANUAL_SEED)
            out = dec.forward_manual_latents(BATCH, latents[:k], t=MANUAL_T)
            torch.manual_seed(MANUAL_SEED)
            samples = torch.from_numpy(model.forward_samples_set_latents(BATCH, latents[:k],
                                                                         t=MANUAL_T))
            case = {'k': k, 't': MANUAL_T, 'samples_uint8': samples,
                    'px_z_sum': out.sum().item(), 'px_z_abs_sum': out.abs().sum().item()}
            if k == n // 2:
                case['px_z'] = out
            ref['manual_latents'][f'k{k}'] = case
        ref['latents_from_forward_get_latents'] = latents

        # with every latent given, neither the RNG nor t matters, and the decoder's output is the
        # posterior pass's
        zs = ref['z_per_block']
        torch.manual_seed(0)
        fixed_a = dec.forward_manual_latents(BATCH, zs, t=0.3)
        torch.manual_seed(123)
        fixed_b = dec.forward_manual_latents(BATCH, zs, t=[0.9] * n)

    torch.save(ref, folder / 'reference.pt')
    ndims = int(np.prod(inp.shape[1:]))
    c = counts(model)
    summary = {
        'hparams': dict(H),
        'n_params': c['n_params'], 'n_conv2d': c['n_conv2d'],
        'n_enc_blocks': c['n_enc_blocks'], 'n_dec_blocks': c['n_dec_blocks'],
        'resolutions': list(dec.resolutions),
        'bias_xs_shapes': [list(b.shape) for b in dec.bias_xs],
        'input_shape_NHWC': list(inp.shape),
        'stats': stats_floats(ref['stats']),
        'init_model_stats_same_seed': init_stats,
        'distortion_per_example': ref['distortion_per_example'].tolist(),
        'kl_sum_per_block_mean_over_batch': ref['kl_sum_per_block'].mean(0).tolist(),
        'rate_check_sum_kl_over_ndims': (ref['kl_sum_per_block'].sum(1) / ndims).mean().item(),
        'uncond_sample_dtype': str(ref['uncond']['t_1.0']['samples_uint8'].dtype),
        'uncond_sample_shapes': {k: list(v['samples_uint8'].shape)
                                 for k, v in ref['uncond'].items()},
        'manual_latents_all_fixed_is_deterministic': bool(torch.equal(fixed_a, fixed_b)),
        'manual_latents_all_fixed_vs_forward_px_z_maxabs': (fixed_a - px_z).abs().max().item(),
    }
    return summary


def unit_vectors(up):
    """(the unit_vectors.pt dict, summary) of upstream's likelihood and KL helpers."""
    helpers = up.vae_helpers
    g = torch.Generator().manual_seed(UNIT_SEED)
    shape = (2, 3, 4, 4)
    mu1, mu2 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    logsigma1 = 0.5 * torch.randn(shape, generator=g)
    logsigma2 = 0.5 * torch.randn(shape, generator=g)
    logits = 2 * torch.randn(2, 5, 5, 10 * DMOL_MIXTURES, generator=g)
    levels = torch.randint(0, 256, (2, 5, 5, 3), generator=g).float()
    levels[0, 0, 0] = torch.tensor([0., 255., 0.])          # the exact edges -1 and +1
    levels[1, 4, 4] = torch.tensor([255., 0., 128.])
    x8 = levels / 127.5 - 1
    x5 = torch.floor(levels / 8) * 8 / 127.5 - 1           # 5-bit values on the same map
    # log-scales below the -7 clamp and means away from the targets: the loss takes its
    # tiny-probability fallback branch
    per_channel = logits[..., DMOL_MIXTURES:].reshape(2, 5, 5, 3, 3 * DMOL_MIXTURES).clone()
    per_channel[..., :DMOL_MIXTURES] = 0.37                                  # means
    per_channel[..., DMOL_MIXTURES:2 * DMOL_MIXTURES] = -9.0                 # log-scales
    sharp = torch.cat([logits[..., :DMOL_MIXTURES], per_channel.flatten(-2)], dim=-1)
    with torch.no_grad():
        u = {'kl_inputs': (mu1, mu2, logsigma1, logsigma2),
             'kl': helpers.gaussian_analytical_kl(mu1, mu2, logsigma1, logsigma2),
             'gauss_sample_seed': GAUSS_SEED}
        torch.manual_seed(GAUSS_SEED)
        u['gauss_sample'] = helpers.draw_gaussian_diag_samples(mu1, logsigma1)
        u.update({'dmol_nr_mix': DMOL_MIXTURES, 'dmol_logits': logits, 'dmol_x8': x8,
                  'dmol_x5': x5,
                  'dmol_loss8': helpers.discretized_mix_logistic_loss(x8, logits),
                  'dmol_loss5_lowbit': helpers.discretized_mix_logistic_loss(x5, logits,
                                                                             low_bit=True),
                  'dmol_logits_sharp': sharp,
                  'dmol_loss8_sharp': helpers.discretized_mix_logistic_loss(x8, sharp),
                  'dmol_sample_seed': DMOL_SEED})
        torch.manual_seed(DMOL_SEED)
        u['dmol_sample'] = helpers.sample_from_discretized_mix_logistic(logits, DMOL_MIXTURES)
    losses = ('dmol_loss8', 'dmol_loss5_lowbit', 'dmol_loss8_sharp')
    summary = {'kl_sum': u['kl'].sum().item(), **{k: u[k].tolist() for k in losses}}
    return u, summary


def presets(up):
    """(presets.json dict, cifar10 key listing) from upstream's registry, parser and VAE."""
    defaults = dict(upstream_hparams(up, ['--hps', '']))
    table = {'argparse_defaults': defaults, 'presets': {}}
    listing = None
    one_image = np.zeros((1, 1, 1, 3), np.uint8)
    for name in PRESETS:
        H, _ = set_up_data(up, upstream_hparams(up, ['--hps', name]), one_image)
        with torch.device('meta'):                # shapes and counts only: no memory, no init
            model = up.vae.VAE(H)
        c = counts(model)
        dec = model.decoder
        info = {'hparams_effective': dict(H),
                'differs_from_argparse_defaults': {
                    k: v for k, v in H.items() if k not in defaults or defaults[k] != v},
                'n_params': c['n_params'], 'n_params_encoder': c['n_params_encoder'],
                'n_params_decoder': c['n_params_decoder'], 'n_conv2d': c['n_conv2d'],
                'n_conv3x3': c['n_conv3x3'], 'n_conv1x1': c['n_conv1x1'],
                'n_enc_blocks': c['n_enc_blocks'],
                'n_dec_blocks(stochastic layers)': c['n_dec_blocks'],
                'n_state_dict_tensors': c['n_state_dict_tensors'],
                'enc_blocks_per_res': {str(r): n for r, n in Counter(
                    res for res, _ in up.vae.parse_layer_string(H.enc_blocks)).items()},
                'dec_blocks_per_res': {str(r): n for r, n in Counter(
                    b.base for b in dec.dec_blocks).items()},
                'bias_xs_resolutions': [b.shape[2] for b in dec.bias_xs],
                'latent_dims_total': sum(H.zdim * b.base ** 2 for b in dec.dec_blocks)}
        table['presets'][name] = info
        if name == 'cifar10':
            listing = key_listing(model)
    return table, listing


# ----------------------------------------------------------------------------------------------
# Writing and comparing

def to_json(obj):
    return json.dumps(obj, indent=1, sort_keys=True)


def upstream_commit(root):
    from progcode_ext.upstream.checkout import PINNED_COMMIT, SUBMODULE, checkout_commit
    commit = checkout_commit(root)
    if commit is None and os.path.isdir(SUBMODULE) and os.path.samefile(root, SUBMODULE):
        commit = PINNED_COMMIT          # the submodule without git metadata: the commit it pins
    return commit


def regenerate(vdvae_root, out, commit=None):
    """Write every reference file into `out`; returns their paths relative to `out`."""
    torch.set_num_threads(1)            # the recorded numbers were computed with one thread
    up = load_upstream(vdvae_root, with_data=True)
    commit = commit or upstream_commit(up.root)
    if not commit:
        raise SystemExit(f'cannot tell which commit {up.root} is; pass --upstream_commit')
    out = Path(out)
    (out / 'upstream_tiny8').mkdir(parents=True, exist_ok=True)
    tiny_summary = tiny8(up, out / 'upstream_tiny8')
    unit, unit_summary = unit_vectors(up)
    torch.save(unit, out / 'unit_vectors.pt')
    summary = {'produced_with': {'torch': torch.__version__, 'numpy': np.__version__,
                                 'upstream_commit': commit[:7]},
               'tiny8': tiny_summary, 'unit_vectors': unit_summary}
    (out / 'upstream_tiny8' / 'summary.json').write_text(to_json(summary))
    table, listing = presets(up)
    (out / 'presets.json').write_text(to_json(table))
    (out / 'cifar10_state_dict_keys.txt').write_text(listing)
    return REFERENCE_FILES


# Floating-point results may differ by a few float32 roundings between CPUs: the recorded numbers
# come from torch's CPU kernels, and e.g. its vectorised exp differs by one ulp from one machine's
# math library to another's (the first version of these files, made on another machine, differs
# from this script's output here by at most 2e-6 absolute). Everything else must be equal.
RTOL, ATOL = 1e-6, 1e-6
REFERENCE_FILES = ['cifar10_state_dict_keys.txt', 'presets.json', 'unit_vectors.pt',
                   'upstream_tiny8/init_model.th', 'upstream_tiny8/keys.txt',
                   'upstream_tiny8/model.th', 'upstream_tiny8/reference.pt',
                   'upstream_tiny8/summary.json']


def differences(a, b, where='', rtol=0.0, atol=0.0):
    """Where two loaded objects differ: types, keys and their order, tensors (dtype, shape, and
    every value), numbers, strings; [] when they agree. Floating-point values (tensors and Python
    floats) may differ by atol + rtol * |b| (0, 0: bit for bit; NaN equals NaN); integers, uint8
    pixels, shapes and text never."""
    if type(a) is not type(b):
        return [f'{where}: {type(a).__name__} vs {type(b).__name__}']
    if isinstance(a, dict):
        if list(a) != list(b):
            return [f'{where}: keys {list(a)} vs {list(b)}']
        return [d for k in a for d in differences(a[k], b[k], f'{where}[{k!r}]', rtol, atol)]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f'{where}: length {len(a)} vs {len(b)}']
        return [d for i, (x, y) in enumerate(zip(a, b))
                for d in differences(x, y, f'{where}[{i}]', rtol, atol)]
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return [f'{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}']
        if a.is_floating_point():
            if torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
                return []
            return [f'{where}: values differ, max abs {(a.double() - b.double()).abs().max():.3g}']
        return [] if torch.equal(a, b) else [f'{where}: values differ']
    if isinstance(a, float):
        if (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol + rtol * abs(b):
            return []
    return [] if a == b else [f'{where}: {a!r} vs {b!r}']


def load(path):
    path = Path(path)
    if path.suffix in ('.th', '.pt'):
        return torch.load(path, weights_only=True)
    text = path.read_text()
    return json.loads(text) if path.suffix == '.json' else text


def compare(folder, expected, rtol=0.0, atol=0.0):
    """{file: [differences]} of the reference files in `folder` against those in `expected`."""
    found = {}
    for name in REFERENCE_FILES:
        a, b = Path(folder) / name, Path(expected) / name
        missing = [str(p) for p in (a, b) if not p.is_file()]
        found[name] = [f'missing {", ".join(missing)}'] if missing else \
            differences(load(a), load(b), rtol=rtol, atol=atol)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--vdvae_root', default=str(REPO / 'vdvae_upstream'),
                        help='a checkout of openai/vdvae (default: the vdvae_upstream submodule)')
    parser.add_argument('--out', required=True, help='folder to write the reference files into')
    parser.add_argument('--compare', metavar='DIR',
                        help='then compare them with the files in DIR (e.g. tests/reference)')
    parser.add_argument('--upstream_commit', help='recorded in summary.json (default: read '
                        "from the checkout's git metadata, or the submodule's pin)")
    args = parser.parse_args(argv)
    for name in regenerate(args.vdvae_root, args.out, args.upstream_commit):
        print('wrote', Path(args.out) / name)
    if args.compare:
        exact = compare(args.out, args.compare)
        close = compare(args.out, args.compare, rtol=RTOL, atol=ATOL)
        for name in REFERENCE_FILES:
            same_bytes = not exact[name] and \
                (Path(args.out) / name).read_bytes() == (Path(args.compare) / name).read_bytes()
            print(f'{name}: ' + ('identical bytes' if same_bytes else
                                 'identical contents' if not exact[name] else
                                 f'equal within rtol={RTOL:g}, atol={ATOL:g}' if not close[name]
                                 else 'DIFFERENT'))
            for d in (close[name] or exact[name])[:10]:
                print('   ', d)
        bad = sum(bool(d) for d in close.values())
        print(f'{len(REFERENCE_FILES) - bad} of {len(REFERENCE_FILES)} files equal those in '
              f'{args.compare}')
        return 1 if bad else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
