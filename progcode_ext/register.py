"""progcode's flags and models, registered into the VDVAE core (loaded by hps_overrides)."""
import math

from vdvae.block_strings import parse_dec_blocks
from vdvae.errors import ConfigError
from vdvae.hps import (comma_list, count, optional, positive, rate, register_arguments,
                       register_check, register_flag_rules)
from vdvae.models import register_model


def _d(text):
    return text + ' (default: %(default)s)'


@register_arguments
def add_progcode_arguments(parser):
    a = parser.add_argument
    a('--distortion_target', type=float, default=0.0032,
      help=_d('stage 1: lambda, the MSE target on the [-1,1] scale (lambda-optimal training)'))
    a('--rate_target', type=float, default=None,
      help=_d('masked gamma_optimal: gamma, the R_K target in nats/dim; None: the trained R_K'))
    a('--progressive_res', type=int, default=None,
      help=_d('z_1..z_K = decoder blocks at resolution <= this; None: image size / 8'))
    a('--eta_init', type=float, default=None,
      help=_d('Lagrange multiplier eta at the start; None: the rate weighed least, as A.5\'s KL '
              'annealing (0.9999 lambda-optimal, 1e-4 gamma-optimal, where eta weighs the rate)'))
    a('--eta_lr', type=float, default=2e-4, help=_d("eta's Adam learning rate"))
    a('--eta_ema_rate', type=float, default=0.99, help=_d('moving average of eta'))
    a('--eta_lr_decay', type=float, default=None,
      help=_d("eta's Adam lr at step t is eta_lr / sqrt(1 + t / this); None: constant (A.5)"))
    a('--lr_decay_iters', type=int, default=0,
      help=_d('after warm-up, a cosine decay of the lr to 0 at this step, for short runs that '
              'must settle within their budget (the toy protocol); 0: a constant lr, as upstream'))
    a('--stage1_path', type=str, default=None,
      help=_d('two_stage, multi_stage (progressive): the stage-1 run folder or checkpoint, '
              'frozen (the one-run spelling of --stage_paths)'))
    a('--init_from', type=str, default=None,
      help=_d('two_stage, multi_stage: start the stages this run trains from a trained run '
              '(folder or checkpoint): a lambda-optimal stage 1, or a whole chain to continue; '
              'none: fresh'))
    a('--stage1_rate_warmup', type=int, default=0,
      help=_d('conventional two_stage, multi_stage: weigh stage 1\'s rate in the loss by t / N '
              'over the first N updates, then the joint -ELBO exactly; 0: the ELBO throughout'))
    a('--training', choices=('progressive', 'conventional'), default='progressive',
      help=_d('two_stage, multi_stage: earlier stages frozen (progressive) or all by the joint '
              'ELBO'))
    a('--distortion_targets', type=comma_list(float), default=None,
      help=_d('multi_stage: lambda_1,...,lambda_{N-1}, decreasing, for N stages; none: '
              '--distortion_target alone (2 stages, the two-stage model)'))
    a('--stage_paths', type=comma_list(str), default=None,
      help=_d('multi_stage (progressive): the runs (folders or checkpoints) of stages 1..K-1, '
              'comma-separated, frozen; this run trains stage K; none: stage 1'))
    a('--stage_widths', type=comma_list(int), default=None,
      help=_d('multi_stage: the width of each stage, comma-separated; none: --width for all'))
    a('--stage_temperatures', type=comma_list(float), default=None,
      help=_d('multi_stage: the sampling temperature of each stage, comma-separated; none: '
              'the sampler\'s --t for every stage'))
    a('--encoder_path', type=str, default=None,
      help=_d('masked: the trained VDVAE checkpoint (ours or upstream official)'))
    a('--mode', choices=('probe', 'gamma_optimal'), default='probe',
      help=_d('masked: D_K probe (frozen q, fresh decoder) or gamma-optimal joint training'))
    a('--masked_init', choices=('trained', 'fresh'), default='trained',
      help=_d('masked (both modes): start the masked decoder from the trained decoder or fresh'))


register_flag_rules(
    eta_lr=positive(), eta_ema_rate=rate(), eta_lr_decay=optional(positive(), 'a constant lr'),
    eta_init=optional(('a number in (0, 1)', lambda v: isinstance(v, (int, float)) and 0 < v < 1),
                      "A.5's start"),
    distortion_target=positive(), rate_target=optional(positive(), "the trained model's R_K"),
    progressive_res=optional(count(), 'image size / 8'), lr_decay_iters=count(0),
    stage1_rate_warmup=count(0))


@register_check
def check_progressive_res(H):
    res = H.get('progressive_res')
    if res is not None and H.get('dec_blocks') and H.get('image_size'):
        resolutions = sorted({r for r, _ in parse_dec_blocks(H.dec_blocks, H.image_size)})
        if res not in resolutions:
            raise ConfigError(f'--progressive_res must be one of the decoder\'s resolutions '
                              f'{resolutions} (z_1..z_K are the blocks up to it), or none '
                              f'(image size / 8), got {res}')


@register_check
def check_chain_flags(H):
    """ConfigError for stage flags that cannot work together (run by `check_hparams`)."""
    from .multi_stage import frozen_paths
    targets = H.get('distortion_targets') or []
    if any(not (math.isfinite(t) and t > 0) for t in targets):
        raise ConfigError(f'--distortion_targets {targets}: every target must be a positive MSE '
                          'on the [-1, 1] scale, e.g. 0.0128,0.0032')
    if any(b >= a for a, b in zip(targets, targets[1:])):
        raise ConfigError(f'--distortion_targets {targets}: each stage must refine the one '
                          'before, so the targets must decrease, e.g. 0.0128,0.0032')
    n = (len(targets) or 1) + 1
    for flag, ok, allowed in (('stage_widths', lambda v: v > 0, 'integers >= 1'),
                              ('stage_temperatures', lambda v: v >= 0, 'numbers >= 0')):
        values = H.get(flag) or []
        if values and len(values) != n:
            raise ConfigError(f'--{flag} {values}: give one per stage, {n} for the {n} stages of '
                              '--distortion_targets')
        if not all(map(ok, values)):
            raise ConfigError(f'--{flag} {values}: must be {allowed}')
    if H.get('stage_paths') and H.get('stage1_path'):
        raise ConfigError('--stage1_path and --stage_paths both name frozen stages: give the runs '
                          'of every frozen stage, in order, with --stage_paths alone')
    if H.get('stage1_rate_warmup') and not (H.get('model') in ('two_stage', 'multi_stage')
                                            and H.get('training') == 'conventional'):
        raise ConfigError('--stage1_rate_warmup schedules the joint -ELBO of a conventionally '
                          'trained chain (--model two_stage --training conventional); drop it')
    if H.get('model') not in ('two_stage', 'multi_stage'):
        return
    paths = frozen_paths(H)
    if H.get('training') == 'conventional' and paths:
        raise ConfigError('--stage_paths names frozen stages, but conventional training trains all '
                          'stages jointly: drop --stage_paths (or --stage1_path), or use '
                          '--training progressive')
    if len(paths) > n - 1:
        raise ConfigError(f'--stage_paths names {len(paths)} trained stages, but the model has '
                          f'{n} stages: at most {n - 1} (the run trains the stage after them)')


def _build_masked(H):
    from .masked import MaskedVAE, ProbeVAE
    return ProbeVAE(H) if H.mode == 'probe' else MaskedVAE(H)


def _build_stage1(H):
    from .stage1 import Stage1VAE
    return Stage1VAE(H)


def _build_two_stage(H):
    from .two_stage import TwoStageHVAE
    return TwoStageHVAE(H)


def _build_multi_stage(H):
    from .multi_stage import MultiStageHVAE
    return MultiStageHVAE(H)


register_model('stage1', _build_stage1)
register_model('multi_stage', _build_multi_stage)
register_model('two_stage', _build_two_stage)
register_model('masked', _build_masked)
