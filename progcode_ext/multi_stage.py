"""Progressive coding over N stages: Section 3's bit prioritisation (eq. 3) as a chain of VDVAEs.
N = 2 is the two-stage HVAE of Section 5.1 (two_stage.py); the paper says the approach extends to
more groups, and N > 2 is that extension.

    stage 1        an unconditional VDVAE with a mean head (stage1.py): x_hat_1, trained
                   lambda_1-optimally (minimise its rate R_1 subject to MSE(x_hat_1) <= lambda_1)
    stage k        (1 < k < N) a conditional VDVAE given x_hat_{k-1} (stage2.py's U-Net over
                   x_hat_{k-1}, its encoder reading [x, x_hat_{k-1}]) with a mean head: x_hat_k,
                   lambda_k-optimal for its own target lambda_k < lambda_{k-1}
    stage N        a conditional VDVAE given x_hat_{N-1} with the mixture of logistics (stage2.py),
                   trained by its ELBO

    p(x, z_1..z_N) = p_1(z_1) prod_{1<k<=N} p_k(z_k | x_hat_{k-1}) p_N(x | z_N, x_hat_{N-1})
    q(z_1..z_N | x) = q_1(z_1 | x) prod_{1<k<=N} q_k(z_k | x, x_hat_{k-1})
    -ELBO / dim    = [-log p_N(x | z_N, x_hat_{N-1}) + sum_k KL(q_k || p_k)] / dim
with x_hat_k the mean head of stage k, a function of z_1..z_k. After stage k the code has spent
R_1 + ... + R_k nats and reconstructs x as x_hat_k: one point of the progressive code's
rate-distortion staircase per stage.

Two trainings of the same networks:
* progressive (`--training progressive`): one run per stage. The run that trains stage K holds
  stages 1..K, the first K - 1 frozen (no gradient, eval mode, bit-identical throughout) from
  `--stage_paths` (their runs, in order; `--stage1_path` is the one-run spelling); K < N is
  lambda_K-optimal, K = N minimises its own part of the -ELBO (-log p_N + R_N).
* conventional: one run, all N stages jointly by the joint -ELBO; gradients flow through every
  x_hat, so the mean heads are free bottlenecks. Stage 1 starts fresh (the paper's baseline).
Table 2's controls change only where either training starts or how it is scheduled: `--init_from`
starts the trained stages from another run (a lambda-optimal stage 1, or a whole trained chain:
continuing a progressive chain by either objective), and `--stage1_rate_warmup N` lets stage 1's
rate into the conventional loss gradually, weighed t / N over the first N updates (then the joint
-ELBO exactly), so that stage 1 can take information before it is charged for it.

Every stage offers the same two calls, `posterior(x, x_prev)` and `decode(n, x_prev, t)` (stage 1
ignores x_prev), so the chain below never asks what kind a stage is. x_hat_k is handed on
unclamped, as the mean head puts it out, in training, reconstruction and sampling alike: the
conventional training has no distortion term on x_hat, so there it lies largely outside [-1, 1],
and clamping it only when sampling would hand the next stage inputs it never saw in training (on
the conventional side only: a bias in Table 2's comparison). It is clamped only where it becomes
a picture.
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

from .mean_head import mse_per_example, picture
from .stage1 import with_psnr
from .stages import stage_kind


def stage_titles(count, n_stages, last='sample'):
    """Row titles of the outputs of stages 1..count of an n_stages chain (pictures, labelled by
    `vdvae.images.label_rows`): x-hat_k (stage k) for a mean head's, `last` for stage N's (with
    its stage number where there are several stages)."""
    return [(f'{last} (stage {k})' if n_stages > 1 else last) if k == n_stages
            else rf'$\hat{{x}}_{k}$ (stage {k})' for k in range(1, count + 1)]


def distortion_targets(H):
    """lambda_1 > ... > lambda_{N-1}: `--distortion_targets`, or `--distortion_target` alone."""
    return list(H.get('distortion_targets') or [H.distortion_target])


def frozen_paths(H):
    """The runs of the frozen stages 1..K-1: `--stage_paths`, or `--stage1_path` alone."""
    return list(H.get('stage_paths') or ([H.stage1_path] if H.get('stage1_path') else []))


def stage_hparams(H, k):
    """The hyperparameters of stage k (1-based): its width (`--stage_widths`) and its target."""
    targets = distortion_targets(H)
    widths = H.get('stage_widths') or [H.width] * (len(targets) + 1)
    changes = dict(width=widths[k - 1])
    if k <= len(targets):
        changes['distortion_target'] = targets[k - 1]
    return Hyperparams(H, **changes)


def run_file(path):
    """A checkpoint file, or a run folder's latest-model-ema.th."""
    return os.path.join(path, 'latest-model-ema.th') if os.path.isdir(path) else path


def stage_weights(path, k):
    """(stage k's state dict, the file's whole state dict) from a checkpoint file: the weights
    under `stage{k}.` of a chain's run, or a whole stage-1 (`Stage1VAE`) file."""
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
    is the stage it trains (progressive: the number of frozen runs + 1; conventional: N). Exposed
    latents (`forward_get_latents`, `sample(latents=...)`) are stage 1's."""

    def __init__(self, H):
        super().__init__()
        if H.training not in ('progressive', 'conventional'):
            raise ConfigError(f"--training must be 'progressive' or 'conventional', got "
                              f"{H.training!r}")
        self.H = H
        self.progressive = H.training == 'progressive'
        self.n_stages = len(distortion_targets(H)) + 1
        paths = frozen_paths(H) if self.progressive else []
        self.trained_stage = len(paths) + 1 if self.progressive else self.n_stages
        for k in range(1, self.trained_stage + 1):
            setattr(self, f'stage{k}', self.make_stage(k))
        self.distortion_kind = 'nll' if self.complete else 'mse'
        if paths:
            self.load_frozen_stages(paths)
        if H.get('init_from'):
            self.start_from(run_file(H.init_from))
        if H.get('stage1_rate_warmup'):
            self.register_buffer('updates', torch.zeros((), dtype=torch.long))

    @property
    def complete(self):
        """Whether this model reaches stage N (the likelihood) rather than ending at a mean head."""
        return self.trained_stage == self.n_stages

    @property
    def stages(self):
        return [self.stage(k) for k in range(1, self.trained_stage + 1)]

    def make_stage(self, k):
        return stage_kind(k, self.n_stages)(stage_hparams(self.H, k))

    def stage(self, k):
        """Stage k (1-based). The stages are the attributes stage1..stageK, not an nn.ModuleList,
        so that every checkpoint's keys are `stage{k}.*` (the runs already trained, the codec's
        weights hash and tests/golden all rest on them)."""
        return getattr(self, f'stage{k}')

    def load_stage(self, k, path):
        """Stage k's weights from a run's checkpoint; -> the file's whole state dict."""
        weights, whole = stage_weights(path, k)
        try:
            check_state_dict(self.stage(k), weights, path)
        except CheckpointError as e:
            raise CheckpointError(f'stage {k}: {e} (or --stage_widths)') from None
        self.stage(k).load_state_dict(weights)
        return whole

    def start_from(self, path):
        """Start the stages this run trains from a run's checkpoint: every one that it holds (a
        lambda-optimal stage-1 run holds stage 1; a chain's run, its stages)."""
        sd = load_state_dict_file(path)
        held = [k for k in range(1, self.trained_stage + 1) if not self.frozen(k)
                and (any(key.startswith(f'stage{k}.') for key in sd)
                     or (k == 1 and not any(key.startswith('stage') for key in sd)))]
        if not held:
            raise CheckpointError(f'--init_from {path!r} holds none of the stages this run trains '
                                  f'(stages {self.trained_stage if self.progressive else 1}..'
                                  f'{self.trained_stage}); name a run of this chain')
        for k in held:
            self.load_stage(k, path)
            self.check_same_frozen(k, sd, path)

    def check_same_frozen(self, k, whole, path):
        """The run `path` that holds stage k was trained on the frozen stages this model holds."""
        for j in range(1, k):
            if not self.frozen(j):
                continue
            earlier = self.stage(j).state_dict()
            saved = {key: whole.get(f'stage{j}.{key}') for key in earlier}
            if any(v is None or not torch.equal(v, earlier[key]) for key, v in saved.items()):
                raise ConfigError(f'the run of stage {k} ({path}) was trained on another stage {j} '
                                  'than the frozen one given; name the runs of one chain')

    def load_frozen_stages(self, paths):
        """Stages 1..K-1 from their runs, checked against each other and, where
        `--distortion_targets` names them, against the targets; then frozen."""
        targets = self.H.get('distortion_targets')
        for k, path in enumerate(map(run_file, paths), 1):
            self.check_same_frozen(k, self.load_stage(k, path), path)
            stage = self.stage(k)
            trained_for = stage.objective.multiplier.target
            if targets and not math.isclose(trained_for, targets[k - 1], rel_tol=1e-6):
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
        """One posterior pass through the stages: per stage {'px_z', 'x_prev' (the x_hat it was
        given), 'x_hat' (its mean head's image; None for stage N), 'rate' (B,), 'latents' (with
        their z's for the last stage held if get_latents)}."""
        dim = math.prod(x.shape[1:])
        out, x_prev = [], None
        for k, stage in enumerate(self.stages, 1):
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen(k)):
                px_z, stats = stage.posterior(x, x_prev, get_latents and k == self.trained_stage)
                x_hat = stage.decoder.out_net(px_z) if k < self.n_stages else None
            out.append(dict(px_z=px_z, x_prev=x_prev, x_hat=x_hat, latents=stats,
                            rate=rate_per_example(stats, dim)))
            x_prev = x_hat
        return out

    def forward(self, x, x_target):
        """-> {'loss', 'rate' (all stages held, nats/dim), 'rate_stage{k}', 'mse_stage{k}' (each
        mean head's MSE), and
        * complete: 'elbo' (the joint -ELBO), 'distortion' = 'nll' (stage N's); the loss is the
          joint -ELBO (conventional) or stage N's part of it (progressive: the frozen stages'
          rates are constants);
        * a progressive run of stage K < N: 'distortion' = 'mse' (stage K's), 'psnr', 'eta',
          'constraint_violation'; the loss is stage K's Lagrangian."""
        chain = self.posterior_chain(x)
        stats = {}
        for k, terms in enumerate(chain, 1):
            stats[f'rate_stage{k}'] = terms['rate'].mean()
            if terms['x_hat'] is not None:
                stats[f'mse_stage{k}'] = mse_per_example(terms['x_hat'], x_target).mean()
        rate, last, stage = sum(terms['rate'] for terms in chain), chain[-1], self.stages[-1]
        if not self.complete:
            own = stage.objective(last['rate'].mean(), stats[f'mse_stage{self.trained_stage}'])
            return dict(with_psnr(own), rate=rate.mean(), **stats)
        nll = stage.decoder.out_net.nll(last['px_z'], x_target)
        elbo = sum((terms['rate'] for terms in chain), nll).mean()     # nll + R_1 + ... + R_N
        loss = (nll + last['rate']).mean() if self.progressive else elbo
        if hasattr(self, 'updates') and self.training:
            # the warm-up's weight on R_1 (the -ELBO above stays what it is: the model's score)
            weight = (self.updates.double() / self.H.stage1_rate_warmup).clamp(max=1.0)
            loss = loss - (1 - weight).to(loss.dtype) * chain[0]['rate'].mean()
        return dict(loss=loss, elbo=elbo, distortion=nll.mean(), nll=nll.mean(), rate=rate.mean(),
                    **stats)

    def after_update(self, stats):
        if hasattr(self, 'updates'):
            self.updates += 1
        if self.progressive and not self.complete:
            self.stages[-1].objective.lagrangian_step(stats)

    def forward_get_latents(self, x):
        return self.stage1.forward_get_latents(x)

    @torch.no_grad()
    def reconstruct_stages(self, x):
        """The reconstruction after each stage, NHWC on [-1, 1], unclamped: each mean head's
        x_hat_k from one posterior pass; stage N's given x_hat_{N-1} and its posterior z_N (the
        rest at t = 0.1)."""
        chain = self.posterior_chain(x, get_latents=self.complete)
        out = [terms['x_hat'] for terms in chain if terms['x_hat'] is not None]
        if self.complete:
            stage, last = self.stages[-1], chain[-1]
            px_z = stage.decode(x.shape[0], last['x_prev'], t=0.1,
                                latents=[s['z'] for s in last['latents']])
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
        out = [terms['x_hat'] for terms in chain if terms['x_hat'] is not None]
        if self.complete:
            out.append(self.stages[-1].decoder.out_net.mean(chain[-1]['px_z']))
        return out

    def temperatures(self, t):
        """One temperature per stage held: `--stage_temperatures`, else t for every stage."""
        per_stage = self.H.get('stage_temperatures')
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
        pictures, x_prev = [], None
        for k, (stage, t) in enumerate(zip(self.stages, ts), 1):
            px_z = stage.decode(n, x_prev, t=t, latents=latents if k == 1 else ())
            pictures.append(stage.decoder.out_net.sample(px_z))
            x_prev = stage.decoder.out_net(px_z) if k < self.n_stages else None
        return pictures

    def stage_output_titles(self):
        """Row titles of `sample_stages`' pictures: x-hat_k (stage k), ..., sample (stage N)."""
        return stage_titles(self.trained_stage, self.n_stages)

    def sample(self, n, t=None, latents=()):
        """The last stage's samples, each stage at its `--stage_temperatures` or at t."""
        return self.sample_stages(n, self.temperatures(t), latents)[-1]

    GRID_TEMPERATURES = (1.0, 0.9)

    def sample_grid(self, originals, x_in, H):
        """Originals, the reconstruction after each stage, then for t = 1.0 and 0.9 the output of
        each stage for one draw."""
        n = originals.shape[0]
        rows = [np.asarray(originals.cpu(), dtype=np.uint8)]
        rows += [picture(r) for r in self.reconstruct_stages(x_in)]
        for t in self.GRID_TEMPERATURES:
            rows += self.sample_stages(n, [t] * self.trained_stage)
        return rows

    def sample_grid_titles(self, H):
        """'original', x-hat_k (stage k) per reconstruction (stage N's: 'reconstruction'), then per
        temperature each stage's output with its t."""
        recons = stage_titles(min(self.trained_stage, self.n_stages - 1), self.n_stages)
        if self.complete:
            recons += stage_titles(self.n_stages, self.n_stages, 'reconstruction')[-1:]
        return ['original'] + recons + [
            f'{title}, t = {t}' for t in self.GRID_TEMPERATURES
            for title in stage_titles(self.trained_stage, self.n_stages)]

    def sample_grid_caption(self, H):
        return 'validation images and their reconstructions, then draws from the prior'
