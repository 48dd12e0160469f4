"""Progressive coding over N stages: Section 3's bit prioritisation (eq. 3) taken past the two
groups of Section 5. The paper says the approach extends to more groups; this is that extension.

    stage 1        an unconditional VDVAE with a mean head (today's stage 1): x_hat_1, trained
                   lambda_1-optimally (minimise its rate R_1 subject to MSE(x_hat_1) <= lambda_1)
    stage k        (1 < k < N) a conditional VDVAE given x_hat_{k-1} (today's stage 2: a U-Net over
                   x_hat_{k-1}, its encoder reading [x, x_hat_{k-1}]) with a mean head: x_hat_k,
                   lambda_k-optimal for its own target lambda_k < lambda_{k-1}
    stage N        a conditional VDVAE given x_hat_{N-1} with the mixture of logistics (today's
                   stage 2), trained by its ELBO

    p(x, z_1..z_N) = p_1(z_1) prod_{1<k<=N} p_k(z_k | x_hat_{k-1}) p_N(x | z_N, x_hat_{N-1})
    q(z_1..z_N | x) = q_1(z_1 | x) prod_{1<k<=N} q_k(z_k | x, x_hat_{k-1})
    -ELBO / dim    = [-log p_N(x | z_N, x_hat_{N-1}) + sum_k KL(q_k || p_k)] / dim
with x_hat_k the mean head of stage k, a function of z_1..z_k. After stage k the code has spent
R_1 + ... + R_k nats and reconstructs x as x_hat_k: one point of the progressive code's
rate-distortion staircase per stage.

Two trainings of the same networks:
* progressive (`--training progressive`): one run per stage. The run that trains stage K holds
  stages 1..K, the first K - 1 frozen from `--stage_paths` (their runs, in order); K < N is
  lambda_K-optimal, K = N minimises its own part of the -ELBO (-log p_N + R_N).
* conventional: one run, all N stages jointly by the joint -ELBO (the mean heads then are free
  bottlenecks, as stage 1's in the two-stage conventional model).

With one target (`--distortion_targets` unset: `--distortion_target`), N = 2 and the model is
`TwoStageHVAE` exactly: the same parameters under the same names (`stage1.*`, `stage2.*`), the same
initialisation and the same random draws, so the same outputs (tests/test_multi_stage.py).
x_hat_k is handed on unclamped, as the mean head puts it out (see two_stage.py for why); it is
clamped only where it becomes a picture.
"""
import math
import os

import numpy as np
import torch

from vdvae.checkpoint import CheckpointError, check_state_dict, load_state_dict_file
from vdvae.contract import Model
from vdvae.errors import ConfigError
from vdvae.hps import Hyperparams
from vdvae.vae_helpers import rate_per_example

from .lagrangian import LagrangianObjective
from .mean_head import MeanHead, mse_per_example
from .stage1 import Stage1VAE, multiplier_kwargs, with_psnr
from .stage2 import ConditionalVAE
from .two_stage import picture


def parse_list(text, kind, flag):
    """'a,b,c' (or a list) -> [kind(a), ...]; None or '' -> []."""
    if text is None or text == '':
        return []
    items = text if isinstance(text, (list, tuple)) else str(text).split(',')
    try:
        return [kind(str(item).strip()) for item in items]
    except ValueError:
        what = 'integers' if kind is int else 'numbers'
        raise ConfigError(f'--{flag} {text!r}: expected comma-separated {what}') from None


def distortion_targets(H):
    """lambda_1 > ... > lambda_{N-1}: `--distortion_targets`, or `--distortion_target` alone."""
    targets = parse_list(H.get('distortion_targets'), float, 'distortion_targets')
    return targets or [H.distortion_target]


def stage_count(H):
    return len(distortion_targets(H)) + 1


def stage_paths(H):
    return [p.strip() for p in (H.get('stage_paths') or '').split(',') if p.strip()]


def stage_hparams(H, k):
    """The hyperparameters of stage k (1-based): its width (`--stage_widths`) and its target."""
    targets, n = distortion_targets(H), stage_count(H)
    widths = parse_list(H.get('stage_widths'), int, 'stage_widths') or [H.width] * n
    changes = dict(width=widths[k - 1])
    if k < n:
        changes['distortion_target'] = targets[k - 1]
    return Hyperparams(H, **changes)


def check_multi_stage_flags(H):
    """ConfigError for stage flags that cannot work together (run by `check_hparams`)."""
    targets = parse_list(H.get('distortion_targets'), float, 'distortion_targets')
    if any(not (math.isfinite(t) and t > 0) for t in targets):
        raise ConfigError(f'--distortion_targets {H.distortion_targets!r}: every target must be a '
                          'positive MSE on the [-1, 1] scale, e.g. 0.0128,0.0032')
    if any(b >= a for a, b in zip(targets, targets[1:])):
        raise ConfigError(f'--distortion_targets {H.distortion_targets!r}: each stage must refine '
                          'the one before, so the targets must decrease, e.g. 0.0128,0.0032')
    n = (len(targets) or 1) + 1
    for flag, kind in (('stage_widths', int), ('stage_temperatures', float)):
        values = parse_list(H.get(flag), kind, flag)
        if values and len(values) != n:
            raise ConfigError(f'--{flag} {H.get(flag)!r}: give one per stage, {n} for the {n} '
                              f'stages of --distortion_targets')
        if any(not v > 0 if kind is int else not v >= 0 for v in values):
            raise ConfigError(f'--{flag} {H.get(flag)!r}: must be '
                              + ('integers >= 1' if kind is int else 'numbers >= 0'))
    if H.get('model') != 'multi_stage':
        return
    paths = stage_paths(H)
    if H.get('training') == 'conventional' and paths:
        raise ConfigError('--stage_paths names frozen stages, but conventional training trains all '
                          'stages jointly: drop --stage_paths, or use --training progressive')
    if len(paths) > n - 1:
        raise ConfigError(f'--stage_paths names {len(paths)} trained stages, but the model has '
                          f'{n} stages: at most {n - 1} (the run trains the stage after them)')


class MeanHeadStage(ConditionalVAE):
    """A middle stage: the conditional VDVAE of stage 2 with a mean head instead of the mixture,
    and its own Lagrange multiplier for its target lambda_k (`H.distortion_target`)."""

    distortion_kind = 'mse'

    def __init__(self, H):
        super().__init__(H)
        self.decoder.out_net = MeanHead(H)
        self.objective = LagrangianObjective('distortion', H.distortion_target,
                                             **multiplier_kwargs(H))

    def forward(self, x, x_hat, get_latents=False):
        """One posterior pass given the previous stage's x_hat: (this stage's x_hat, NHWC,
        unclamped; per-block [{'kl', 'z'}]). It has no likelihood, so no `x_target` (unlike
        `ConditionalVAE.forward`): its distortion is the MSE of its x_hat."""
        px_z, stats = self.posterior(x, x_hat, get_latents)
        return self.decoder.out_net(px_z), stats


def run_file(path):
    """A checkpoint file, or a run folder's latest-model-ema.th."""
    return os.path.join(path, 'latest-model-ema.th') if os.path.isdir(path) else path


def frozen_stage_weights(path, k):
    """(stage k's state dict, the file's whole state dict) from a checkpoint file: the weights
    under `stage{k}.` of a multi-stage run, or a whole stage-1 (`Stage1VAE`) file."""
    sd = load_state_dict_file(path)
    prefix = f'stage{k}.'
    mine = {key[len(prefix):]: v for key, v in sd.items() if key.startswith(prefix)}
    if mine:
        return mine, sd
    if k == 1 and not any(key.startswith('stage') for key in sd):
        return sd, {}
    raise CheckpointError(f'--stage_paths: {path!r} holds no stage {k} (no {prefix}* weights); '
                          'name the run of each earlier stage, in order')


class MultiStageHVAE(Model):
    """N stages (N = len(--distortion_targets) + 1); this run's model holds stages 1..K, where K
    is the stage it trains (progressive: len(--stage_paths) + 1; conventional: N). Exposed latents
    (`forward_get_latents`, `sample(latents=...)`) are stage 1's."""

    def __init__(self, H):
        super().__init__()
        if H.training not in ('progressive', 'conventional'):
            raise ConfigError(f"--training must be 'progressive' or 'conventional', got "
                              f"{H.training!r}")
        check_multi_stage_flags(Hyperparams(H, model='multi_stage'))
        self.H = H
        self.progressive = H.training == 'progressive'
        self.n_stages = stage_count(H)
        paths = stage_paths(H) if self.progressive else []
        self.trained_stage = len(paths) + 1 if self.progressive else self.n_stages
        for k in range(1, self.trained_stage + 1):
            setattr(self, f'stage{k}', self.make_stage(k))
        self.distortion_kind = 'nll' if self.complete else 'mse'
        if paths:
            self.load_frozen_stages(paths)

    @property
    def complete(self):
        """Whether this model reaches stage N (the likelihood) rather than ending at a mean head."""
        return self.trained_stage == self.n_stages

    @property
    def stages(self):
        return [getattr(self, f'stage{k}') for k in range(1, self.trained_stage + 1)]

    def make_stage(self, k):
        H = stage_hparams(self.H, k)
        if k == 1:
            return Stage1VAE(H)
        return MeanHeadStage(H) if k < self.n_stages else ConditionalVAE(H)

    def load_frozen_stages(self, paths):
        """Stages 1..K-1 from their runs, checked against each other and against the targets;
        then frozen (no gradient, eval mode)."""
        targets = distortion_targets(self.H)
        for k, path in enumerate(map(run_file, paths), 1):
            stage = getattr(self, f'stage{k}')
            weights, whole = frozen_stage_weights(path, k)
            try:
                check_state_dict(stage, weights, path)
            except CheckpointError as e:
                raise CheckpointError(f'--stage_paths: stage {k}: {e} (or --stage_widths)'
                                      ) from None
            for j in range(1, k):
                earlier = getattr(self, f'stage{j}').state_dict()
                saved = {key: whole.get(f'stage{j}.{key}') for key in earlier}
                if any(v is None or not torch.equal(v, earlier[key]) for key, v in saved.items()):
                    raise ConfigError(f'--stage_paths: the run of stage {k} ({path}) was trained '
                                      f'on another stage {j} than {paths[j - 1]}; name the runs '
                                      'of one chain')
            stage.load_state_dict(weights)
            trained_for = stage.objective.multiplier.target
            if not math.isclose(trained_for, targets[k - 1], rel_tol=1e-6):
                raise ConfigError(f'--stage_paths: stage {k} ({path}) was trained for lambda '
                                  f'{trained_for:g}, but the targets name {targets[k - 1]:g}: pass '
                                  'the --distortion_targets it was trained with')
            stage.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        for stage in self.stages[:-1] if self.progressive else ():
            stage.eval()                       # frozen: nothing of it may change
        return self

    def frozen(self, k):
        return self.progressive and k < self.trained_stage

    def posterior_chain(self, x, get_latents=False):
        """One posterior pass through the stages: per stage {'rate' (B,), 'latents' (with their
        z's for the last stage held if get_latents), and 'x_hat' (a mean head's image) or, for
        stage N, 'px_z' and the 'x_prev' it was given}."""
        dim = math.prod(x.shape[1:])
        out, x_hat = [], None
        for k, stage in enumerate(self.stages, 1):
            latents = get_latents and k == self.trained_stage
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen(k)):
                if k == 1:
                    px_z, stats = stage.decoder(stage.encoder(x), get_latents=latents)
                    terms = dict(x_hat=stage.decoder.out_net(px_z))
                elif isinstance(stage, MeanHeadStage):
                    x_hat_k, stats = stage(x, x_hat, latents)
                    terms = dict(x_hat=x_hat_k)
                else:
                    px_z, stats = stage.posterior(x, x_hat, latents)
                    terms = dict(px_z=px_z, x_prev=x_hat)
            terms.update(rate=rate_per_example(stats, dim), latents=stats)
            out.append(terms)
            x_hat = terms.get('x_hat')
        return out

    def forward(self, x, x_target):
        """-> {'loss', 'rate' (all stages held, nats/dim), 'rate_stage{k}', 'mse_stage{k}' (each
        mean head's MSE), and
        * complete: 'elbo' (the joint -ELBO), 'distortion' = 'nll' (stage N's); the loss is the
          joint -ELBO (conventional) or stage N's part of it (progressive);
        * a progressive run of stage K < N: 'distortion' = 'mse' (stage K's), 'psnr', 'eta',
          'constraint_violation'; the loss is stage K's Lagrangian."""
        chain = self.posterior_chain(x)
        stats = {}
        for k, terms in enumerate(chain, 1):
            stats[f'rate_stage{k}'] = terms['rate'].mean()
            if 'x_hat' in terms:
                stats[f'mse_stage{k}'] = mse_per_example(terms['x_hat'], x_target).mean()
        rate = sum(terms['rate'] for terms in chain)
        last = chain[-1]
        if not self.complete:
            stage = self.stages[-1]
            own = stage.objective(last['rate'].mean(), stats[f'mse_stage{self.trained_stage}'])
            return dict(with_psnr(own), rate=rate.mean(), **stats)
        stage = self.stages[-1]
        nll = stage.decoder.out_net.nll(last['px_z'], x_target)
        elbo = (nll + rate).mean()
        loss = (nll + last['rate']).mean() if self.progressive else elbo
        return dict(loss=loss, elbo=elbo, distortion=nll.mean(), nll=nll.mean(), rate=rate.mean(),
                    **stats)

    def after_update(self, stats):
        if self.progressive and not self.complete:
            self.stages[-1].objective.lagrangian_step(stats)

    def forward_get_latents(self, x):
        return self.stage1.forward_get_latents(x)

    @torch.no_grad()
    def reconstruct_stages(self, x):
        """The reconstruction after each stage, NHWC on [-1, 1], unclamped: each mean head's
        x_hat_k from one posterior pass; stage N's given x_hat_{N-1} and its posterior z_N (the
        rest at t = 0.1), as the two-stage model's."""
        chain = self.posterior_chain(x, get_latents=self.complete)
        out = [terms['x_hat'] for terms in chain if 'x_hat' in terms]
        if self.complete:
            stage, last = self.stages[-1], chain[-1]
            px_z = stage.decode(last['x_prev'], t=0.1, latents=[s['z'] for s in last['latents']])
            out.append(stage.decoder.out_net.reconstruction(px_z))
        return out

    def reconstruct(self, x):
        return self.reconstruct_stages(x)[-1]

    @torch.no_grad()
    def stage_means(self, x):
        """The MSE-optimal reconstruction after each stage under the model, from one posterior
        pass, NHWC on [-1, 1]: each mean head's x_hat_k, then stage N's mixture mean (the point
        after stage k of the progressive code's staircase)."""
        chain = self.posterior_chain(x)
        out = [terms['x_hat'] for terms in chain if 'x_hat' in terms]
        if self.complete:
            out.append(self.stages[-1].decoder.out_net.mean(chain[-1]['px_z']))
        return out

    def temperatures(self, t):
        """One temperature per stage held: `--stage_temperatures`, else t for every stage."""
        per_stage = parse_list(self.H.get('stage_temperatures'), float, 'stage_temperatures')
        return per_stage[:self.trained_stage] if per_stage else [t] * self.trained_stage

    @torch.no_grad()
    def sample_stages(self, n, ts=None, latents=()):
        """What each stage puts out for one draw from the prior, NumPy uint8 NHWC: the pictures of
        x_hat_1, ..., then stage N's sample (or x_hat_K, for a model that ends at stage K). Stage k
        draws at temperature ts[k-1] (default: all 1); the first len(latents) latents of stage 1
        are fixed to `latents`."""
        ts = [None] * self.trained_stage if ts is None else list(ts)
        if len(ts) != self.trained_stage:
            raise ConfigError(f'give one temperature per stage ({self.trained_stage}), got {ts}')
        stage1 = self.stage1
        x_hat = stage1.decoder.out_net(
            stage1.decoder.forward_manual_latents(n, list(latents), t=ts[0]))
        pictures = [picture(x_hat)]
        for stage, t in zip(self.stages[1:], ts[1:]):
            px_z = stage.decode(x_hat, t=t)
            if isinstance(stage, MeanHeadStage):
                x_hat = stage.decoder.out_net(px_z)
                pictures.append(picture(x_hat))
            else:
                pictures.append(stage.decoder.out_net.sample(px_z))
        return pictures

    def sample(self, n, t=None, latents=()):
        """The last stage's samples, each stage at its `--stage_temperatures` or at t."""
        return self.sample_stages(n, self.temperatures(t), latents)[-1]

    def sample_grid(self, originals, x_in, H):
        """Originals, the reconstruction after each stage, then for t = 1.0 and 0.9 the output of
        each stage for one draw (N = 2: the two-stage model's grid)."""
        n = originals.shape[0]
        recons = self.reconstruct_stages(x_in)
        rows = [np.asarray(originals.cpu(), dtype=np.uint8)]
        rows += [picture(r) for r in recons]
        for t in (1.0, 0.9):
            rows += self.sample_stages(n, [t] * self.trained_stage)
        return rows
