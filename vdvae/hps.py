"""Hyperparameters: upstream VDVAE's flags and presets, with strict lookups.

Configuration is a registry of named presets (small diffs over argparse defaults) plus command-line
flags, as in upstream `hps.py`: `--hps a,b` applies the presets in order as argparse defaults, then
the command line is parsed again so explicit flags win. Differences from upstream, all deliberate:

* reading a key that no preset or flag defines raises (upstream silently returns None);
* `--hps` may be omitted (pure defaults), and an unknown preset or preset key lists the valid ones;
* `image_size` / `image_channels` are also flags (default: taken from the dataset, as upstream does);
* extensions add presets with `register_preset` and flags with `register_arguments`.
"""
import argparse
import difflib
import math
from importlib import metadata

from .block_strings import check_architecture
from .errors import ConfigError

# Image geometry of each dataset (upstream sets these in data.set_up_data; channels are always 3
# there). Extensions add their datasets with `register_dataset`.
DATASET_IMAGE_SHAPE = {
    'cifar10': (32, 3),
    'imagenet32': (32, 3),
    'imagenet64': (64, 3),
    'ffhq_256': (256, 3),
    'ffhq_1024': (1024, 3),
}


class Hyperparams(dict):
    """A dict with attribute access. Unlike upstream, a missing key is an error, not None."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(unknown_name_message('hyperparameter', name, self.keys())) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]

    def copy(self):
        return Hyperparams(self)


def unknown_name_message(kind, name, valid):
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
    return f"unknown {kind} {name!r}.{hint} Valid: {', '.join(valid)}"


# ------------------------------------------------------------------------------------------------
# Presets (values as upstream's parser resolves them; see tests/reference/presets.json)

HPARAMS_REGISTRY = {}


def register_preset(name, hps, parent=None):
    """Add preset `name`: the keys of `hps` over a copy of preset `parent` (if any). Returns it."""
    if parent is not None and parent not in HPARAMS_REGISTRY:
        raise ConfigError(unknown_name_message('parent preset', parent, HPARAMS_REGISTRY))
    preset = Hyperparams(HPARAMS_REGISTRY[parent]) if parent else Hyperparams()
    preset.update(hps)
    HPARAMS_REGISTRY[name] = preset
    return preset


def register_dataset(name, image_size, image_channels):
    DATASET_IMAGE_SHAPE[name] = (image_size, image_channels)


register_preset('cifar10', dict(
    width=384, lr=2e-4, zdim=16, wd=0.01, warmup_iters=100, dataset='cifar10', n_batch=16,
    ema_rate=0.9999,
    dec_blocks='1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21',
    enc_blocks='32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3',
))
register_preset('imagenet32', dict(
    width=512, lr=1.5e-4, zdim=16, wd=0.01, warmup_iters=100, dataset='imagenet32', n_batch=8,
    ema_rate=0.999, skip_threshold=300, epochs_per_eval=1, epochs_per_eval_save=1,
    dec_blocks='1x2,4m1,4x4,8m4,8x9,16m8,16x19,32m16,32x40',
    enc_blocks='32x15,32d2,16x9,16d2,8x8,8d2,4x6,4d4,1x6',
), parent='cifar10')
register_preset('imagenet64', dict(
    n_batch=4, grad_clip=220.0, skip_threshold=380.0, dataset='imagenet64',
    dec_blocks='1x2,4m1,4x3,8m4,8x7,16m8,16x15,32m16,32x31,64m32,64x12',
    enc_blocks='64x11,64d2,32x20,32d2,16x9,16d2,8x8,8d2,4x7,4d4,1x5',
), parent='imagenet32')
register_preset('ffhq256', dict(
    n_batch=1, grad_clip=130.0, skip_threshold=180.0, dataset='ffhq_256',
    num_images_visualize=2, num_variables_visualize=3, num_temperatures_visualize=1,
    dec_blocks='1x2,4m1,4x3,8m4,8x4,16m8,16x9,32m16,32x21,64m32,64x13,128m64,128x7,256m128',
    enc_blocks='256x3,256d2,128x8,128d2,64x12,64d2,32x17,32d2,16x7,16d2,8x5,8d2,4x5,4d4,1x4',
), parent='imagenet64')
register_preset('ffhq1024', dict(
    width=16, custom_width_str='512:32,256:64,128:512,64:512,32:512,16:512,8:512,4:512,1:512',
    lr=7e-5, grad_clip=360.0, skip_threshold=500.0, num_mixtures=2, iters_per_images=25000,
    dataset='ffhq_1024', data_root='./ffhq_images1024x1024',
    num_images_visualize=1, num_variables_visualize=0, num_temperatures_visualize=4,
    dec_blocks='1x2,4m1,4x3,8m4,8x4,16m8,16x9,32m16,32x20,64m32,64x14,128m64,128x7,256m128,'
               '256x2,512m256,1024m512',
    enc_blocks='1024x1,1024d2,512x3,512d2,256x5,256d2,128x7,128d2,64x10,64d2,32x14,32d2,16x7,'
               '16d2,8x5,8d2,4x5,4d4,1x4',
), parent='ffhq256')

# ------------------------------------------------------------------------------------------------
# Flags

def _d(help_text):
    return help_text + ' (default: %(default)s)'


def load_plugins():
    """Import the modules registered under the entry-point group `vdvae.plugins` (installed
    packages such as progcode's `hps_overrides`), so that their presets, flags, models and
    datasets exist. Called once, by `vdvae/__init__.py`."""
    for entry_point in metadata.entry_points(group='vdvae.plugins'):
        entry_point.load()


def add_vae_arguments(parser):
    """Upstream's flags, names and defaults, plus the project's own (image geometry) and those
    of plugins."""
    a = parser.add_argument
    a('--seed', type=int, default=0, help=_d('seed for numpy and torch'))
    a('--port', type=int, default=29500, help=_d('MASTER_PORT for torch.distributed'))
    a('--save_dir', type=str, default='./saved_models', help=_d('runs go to save_dir/desc'))
    a('--data_root', type=str, default='./', help=_d('dataset location'))
    a('--desc', type=str, default='test', help=_d('run name'))
    a('--hparam_sets', '--hps', type=str, help='comma-separated presets, applied in order: '
      + ', '.join(HPARAMS_REGISTRY))
    a('--restore_path', type=str, default=None, help=_d('model weights to load'))
    a('--restore_ema_path', type=str, default=None, help=_d('EMA weights to load'))
    a('--restore_log_path', type=str, default=None, help=_d('log.jsonl to resume epoch/step from'))
    a('--restore_optimizer_path', type=str, default=None, help=_d('optimizer state to load'))
    a('--dataset', type=str, default='cifar10', help=_d('dataset name'))
    a('--image_size', type=int, default=None, help=_d('image side length; None: from dataset'))
    a('--image_channels', type=int, default=None, help=_d('1 or 3; None: from dataset'))

    a('--ema_rate', type=float, default=0.999, help=_d('EMA decay of the weights'))
    a('--enc_blocks', type=str, default=None, help=_d('encoder block string, e.g. 32x3,32d2,16x2'))
    a('--dec_blocks', type=str, default=None, help=_d('decoder block string, e.g. 1x1,4m1,4x2'))
    a('--zdim', type=int, default=16, help=_d('channels of each latent layer'))
    a('--width', type=int, default=512, help=_d('channel width'))
    a('--custom_width_str', type=str, default='', help=_d('per-resolution widths "res:w,..."'))
    a('--bottleneck_multiple', type=float, default=0.25, help=_d('block hidden width / width'))
    a('--no_bias_above', type=int, default=64, help=_d('learned decoder biases up to this res'))
    a('--scale_encblock', action='store_true', help='unused (kept for upstream compatibility)')
    a('--test_eval', action='store_true', help='evaluate on the test split and exit')
    a('--warmup_iters', type=float, default=0, help=_d('linear LR warm-up steps; 0: none'))

    a('--num_mixtures', type=int, default=10, help=_d('logistic mixture components'))
    a('--grad_clip', type=float, default=200.0, help=_d('gradient-norm clip'))
    a('--skip_threshold', type=float, default=400.0, help=_d('skip steps with grad norm >= this; -1: never'))
    a('--lr', type=float, default=0.00015, help=_d('learning rate'))
    a('--lr_prior', type=float, default=0.00015, help='unused (kept for upstream compatibility)')
    a('--wd', type=float, default=0.0, help=_d('decoupled weight decay'))
    a('--wd_prior', type=float, default=0.0, help='unused (kept for upstream compatibility)')
    a('--num_epochs', type=int, default=10000, help=_d('epochs to train'))
    a('--n_batch', type=int, default=32, help=_d('batch size per process (per GPU)'))
    a('--adam_beta1', type=float, default=0.9, help=_d('Adam beta1'))
    a('--adam_beta2', type=float, default=0.9, help=_d('Adam beta2 (upstream: 0.9)'))
    a('--temperature', type=float, default=1.0, help='unused (kept for upstream compatibility)')

    a('--iters_per_ckpt', type=int, default=25000, help=_d('numbered checkpoint period'))
    a('--iters_per_print', type=int, default=1000, help=_d('train-log period'))
    a('--iters_per_save', type=int, default=10000, help=_d('latest-checkpoint period'))
    a('--iters_per_images', type=int, default=10000, help=_d('sample-grid period'))
    a('--epochs_per_eval', type=int, default=10, help=_d('validation period in epochs'))
    a('--epochs_per_probe', type=int, default=None, help='unused (kept for upstream compatibility)')
    a('--epochs_per_eval_save', type=int, default=20, help='unused (kept for upstream compatibility)')
    a('--num_images_visualize', type=int, default=8, help=_d('columns of the sample grid'))
    a('--num_variables_visualize', type=int, default=6, help=_d('rows with first-k latents fixed'))
    a('--num_temperatures_visualize', type=int, default=3, help=_d('rows of prior samples'))

    # The project's additions to upstream's training flags.
    a('--num_iters', type=int, default=None, help=_d('stop after this many iterations in all'))
    a('--max_consecutive_skips', type=int, default=200,
      help=_d('stop when this many updates in a row were skipped (upstream\'s loop '
              'would skip every update from then on: openai/vdvae issue 25)'))
    a('--resume', action='store_true', help='continue the run in save_dir/desc exactly')
    a('--overwrite', action='store_true', help='replace a run already in save_dir/desc')
    a('--amp', choices=('fp32', 'bf16', 'fp16'), default='fp32',
      help=_d('autocast precision; likelihood and KL stay float32'))
    a('--channels_last', action='store_true', help='channels-last memory format (faster convs)')
    a('--compile', action='store_true', help='torch.compile the model')
    a('--ensemble', type=int, default=1,
      help='train this many models (seeds --seed, --seed + 1, ...; runs DESC-seedS) in one '
           'process as one batched computation (vdvae/ensemble.py)')
    a('--device', type=str, default=None, help=_d('torch device; None: cuda:LOCAL_RANK or cpu'))
    a('--collective_timeout', type=float, default=600,
      help=_d('seconds a rank waits for the others in a collective before it stops, naming the '
              'lost rank (several processes only; more than the slowest checkpoint save)'))
    a('--model', type=str, default='vdvae', help=_d('network to train (vdvae.models.MODELS)'))
    a('--quiet', action='store_true', help='log to files only (log.txt, log.jsonl), not stdout')
    for add_arguments in EXTRA_ARGUMENTS:
        add_arguments(parser)
    return parser


EXTRA_ARGUMENTS = []


def comma_list(kind):
    """An argparse type for a comma-separated list of `kind` (int, float or str): '8,12' -> [8,
    12], '' -> []. Presets and flags alike are parsed by it once, so H holds the list."""
    what = {int: 'integers', float: 'numbers', str: 'paths'}[kind]

    def parse(text):
        if isinstance(text, (list, tuple)):
            text = ','.join(map(str, text))
        try:
            return [kind(item.strip()) for item in str(text).split(',') if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected comma-separated {what}') from None
    parse.__name__ = f'comma-separated {what}'
    return parse


def number(low, kind=int, strict=False):
    """An argparse type: a `kind` >= low (> low if strict), or argparse's one-line error."""
    def parse_number(text):
        try:
            value = kind(text)
        except ValueError:
            what = 'an integer' if kind is int else 'a number'
            raise argparse.ArgumentTypeError(f'{text!r} is not {what}') from None
        if not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f'{text!r}: must be {">" if strict else ">="} {low}')
        return value
    return parse_number


def typed(parser, H):
    """H with its string values of typed flags parsed as the command line parses them (for
    overrides given in Python and for configs saved before a flag got its type)."""
    types = {a.dest: a.type for a in parser._actions if callable(a.type) and a.type is not str}
    for key, value in H.items():
        if isinstance(value, str) and key in types:
            try:
                H[key] = types[key](value)
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise ConfigError(f'--{key} {value!r}: {e}') from None
    return H


def register_arguments(add_arguments):
    """Extensions register `add_arguments(parser)`; it runs in every `add_vae_arguments`."""
    if add_arguments not in EXTRA_ARGUMENTS:
        EXTRA_ARGUMENTS.append(add_arguments)
    return add_arguments


# ------------------------------------------------------------------------------------------------
# Checks: every numeric flag in its range, once the presets and flags are resolved

def _integer(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def count(low=1):
    return f'an integer >= {low}', lambda v: _integer(v) and v >= low


def positive():
    return 'a positive number', lambda v: _number(v) and v > 0


def non_negative():
    return '>= 0', lambda v: _number(v) and v >= 0


def rate():
    """Decay rates and Adam's betas: 1 would freeze what they average."""
    return 'a number in [0, 1)', lambda v: _number(v) and 0 <= v < 1


def optional(rule, meaning):
    allowed, ok = rule
    return f'{allowed}, or none ({meaning})', lambda v: v is None or ok(v)


FLAG_RULES = {
    'n_batch': count(), 'width': count(), 'zdim': count(), 'num_mixtures': count(),
    'num_epochs': count(), 'num_iters': optional(count(), 'train for --num_epochs'),
    'iters_per_ckpt': count(), 'iters_per_print': count(), 'iters_per_save': count(),
    'iters_per_images': count(), 'epochs_per_eval': count(), 'max_consecutive_skips': count(),
    'ensemble': count(),
    'num_images_visualize': count(), 'num_variables_visualize': count(0),
    'num_temperatures_visualize': ('an integer from 0 to 4', lambda v: _integer(v) and 0 <= v <= 4),
    'image_size': optional(count(), 'from the dataset'),
    'image_channels': optional(('1 or 3', lambda v: v in (1, 3)), 'from the dataset'),
    'lr': positive(), 'grad_clip': positive(), 'bottleneck_multiple': positive(),
    'skip_threshold': ('a number > 0, or -1 (never skip)',
                       lambda v: _number(v) and (v > 0 or v == -1)),
    'warmup_iters': non_negative(), 'wd': non_negative(), 'collective_timeout': positive(),
    'ema_rate': rate(), 'adam_beta1': rate(), 'adam_beta2': rate(),
}
CHECKS = []


def register_flag_rules(**rules):
    """Extensions add rules for their flags: key=(what is allowed, predicate), e.g. positive()."""
    FLAG_RULES.update(rules)


def register_check(check):
    """Extensions add `check(H)`, raising ConfigError for values of their flags that cannot work;
    it runs after the core's own checks."""
    if check not in CHECKS:
        CHECKS.append(check)
    return check


def check_hparams(H):
    """Every flag's value in its range (one message naming the flag, the value and what is
    allowed), the block strings together, then the extensions' checks."""
    for key, (allowed, ok) in FLAG_RULES.items():
        if key in H and not ok(H[key]):
            raise ConfigError(f'--{key} must be {allowed}, got {H[key]!r}')
    registered_size = DATASET_IMAGE_SHAPE.get(H.get('dataset'), (None, None))[0]
    if H.get('image_size') and H.get('enc_blocks') and H.get('dec_blocks') and \
            registered_size in (None, H.image_size):     # else the data check says it better
        check_architecture(H)
    for check in CHECKS:
        check(H)
    return H


# Keys the project adds on top of upstream's, with the defaults that let an upstream-style H
# (upstream's keys only) build a VAE here unchanged.
PROJECT_DEFAULTS = {'image_size': None, 'image_channels': None}


def with_defaults(H):
    """A Hyperparams copy of `H` (dict, Namespace or Hyperparams) with project keys filled in: the
    image geometry from the dataset's registered shape where the flags leave it None. A dataset
    whose geometry only its files tell (`imagefolder`) keeps None here: `vdvae.data.set_up_data`
    and `vdvae.data.resolve_geometry` read it off the data."""
    H = Hyperparams(vars(H) if isinstance(H, argparse.Namespace) else H)
    for key, value in PROJECT_DEFAULTS.items():
        H.setdefault(key, value)
    if H.image_size is None or H.image_channels is None:
        if H.get('dataset') not in DATASET_IMAGE_SHAPE:
            raise ConfigError('--dataset: ' + unknown_name_message(
                'dataset', str(H.get('dataset')), DATASET_IMAGE_SHAPE))
        size, channels = DATASET_IMAGE_SHAPE[H.dataset]
        H.image_size = size if H.image_size is None else H.image_size
        H.image_channels = channels if H.image_channels is None else H.image_channels
    return H


def with_geometry(H):
    """`with_defaults(H)`, which must know the image geometry: what a network is built from."""
    H = with_defaults(H)
    if H.image_size is None or H.image_channels is None:
        raise ConfigError(f'the image size of dataset {H.get("dataset")!r} is known only from its '
                          'files: pass --image_size and --image_channels, or read them off the '
                          'data first (vdvae.data.resolve_geometry(H))')
    return H


def parse_flags(parser, s=None):
    """Parse `s` with presets from `--hps` as defaults (flags win); image geometry unresolved."""
    args = parser.parse_args(s)
    names = [n.strip() for n in (args.hparam_sets or '').split(',') if n.strip()]
    valid_keys = {action.dest for action in parser._actions}
    for name in names:
        if name not in HPARAMS_REGISTRY:
            raise ConfigError(unknown_name_message('preset', name, HPARAMS_REGISTRY))
        preset = HPARAMS_REGISTRY[name]
        for key in preset:
            if key not in valid_keys:
                raise ConfigError(f'preset {name!r} sets {key!r}, which is not a flag. '
                                  + unknown_name_message('key', key, valid_keys))
        parser.set_defaults(**preset)
    return Hyperparams(vars(parser.parse_args(s)))


def parse_args_and_update_hparams(H, parser, s=None):
    """Upstream's entry point: fills `H` from presets and flags, then the image geometry where the
    dataset registers one (see `with_defaults`)."""
    H.update(parse_flags(parser, s))
    H.update(with_defaults(H))
    return check_hparams(H)


def setup_hparams(argv=None, parser=None):
    """Build the parser with every registered flag and return the resolved Hyperparams."""
    parser = parser or argparse.ArgumentParser()
    add_vae_arguments(parser)
    return parse_args_and_update_hparams(Hyperparams(), parser, argv)


def read_hparams(path):
    """A run's saved hparams.json as Hyperparams, its list flags parsed (configs saved before they
    were lists hold them as comma-separated text)."""
    import json
    with open(path) as f:
        saved = json.load(f)
    return typed(add_vae_arguments(argparse.ArgumentParser()), Hyperparams(saved))


def get_hparams(*presets, **overrides):
    """Resolved Hyperparams for presets plus overrides, without a command line (for scripts)."""
    parser = add_vae_arguments(argparse.ArgumentParser())
    H = parse_flags(parser, ['--hps', ','.join(presets)] if presets else [])
    for key in overrides:
        if key not in H:
            raise ConfigError(unknown_name_message('hyperparameter', key, H.keys()))
    H.update(overrides)
    return check_hparams(with_defaults(typed(parser, H)))
