"""The model a file is coded with: a finished run's folder (its hparams.json rebuilds the model,
including the frozen stages its --stage_paths name) and its weights (the EMA weights by default)."""
import os

from vdvae.checkpoint import restore_params
from vdvae.hps import read_hparams
from vdvae.models import build_model

from .container import CodecError


def load_model(run, checkpoint=None):
    """(H, model in eval mode on the CPU) of the run folder `run`, with the weights of
    `checkpoint` (default: the run's latest-model-ema.th)."""
    run = os.fspath(run)
    hparams = os.path.join(run, 'hparams.json')
    if not os.path.isdir(run):
        raise CodecError(f'--run {run!r} is not a folder; give the folder of a finished training '
                         'run (it holds hparams.json)')
    if not os.path.exists(hparams):
        raise CodecError(f'--run {run!r} holds no hparams.json; give the folder of a training run')
    H = read_hparams(hparams)
    model = build_model(H)
    restore_params(model, checkpoint or os.path.join(run, 'latest-model-ema.th'))
    return H, model.cpu().eval()
