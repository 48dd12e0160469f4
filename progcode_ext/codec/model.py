"""The model a file is coded with: a finished run's folder and its weights (the EMA weights by
default), loaded by `vdvae.models.load_trained`; on the CPU unless the command names a device."""
from vdvae.errors import ConfigError
from vdvae.models import load_trained

from .container import CodecError


def load_model(run, checkpoint=None):
    """(H, model in eval mode on the CPU) of the run folder `run`, with the weights of
    `checkpoint` (default: the run's latest-model-ema.th)."""
    try:
        H, model = load_trained(run, checkpoint)
    except ConfigError as e:
        raise CodecError(f'--run: {e}') from None
    return H, model.cpu()
