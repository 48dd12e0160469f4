"""Reading upstream VDVAE checkpoint files and writing files atomically.

Upstream writes `{path}-model.th` (the DDP-wrapped model: keys prefixed `module.`),
`{path}-model-ema.th` (no prefix) and `{path}-opt.th` (apex FusedAdam: `step` lives in each param
group, not per parameter). Every load here is `torch.load(..., weights_only=True)`, so a file that
would run code when unpickled is refused.
"""
import errno
import functools
import json
import os
import pickle
import pickletools
import tempfile
import warnings

import torch

from .errors import UserError
from .hps import HPARAMS_REGISTRY, get_hparams


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be used; the message names the file, the problem and a fix."""


# ------------------------------------------------------------------------------------------------
# Writing

def atomic_write(path, write):
    """Call `write(f)` on a temporary file in the folder of `path`, fsync, then rename it over
    `path`: a crash leaves either the old file or the new one, never a truncated one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj, path):
    """torch.save, atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


# ------------------------------------------------------------------------------------------------
# Reading

def check_can_write(path, what):
    """That `path` can be created (with the folders it needs) or replaced, checked without
    writing: its nearest existing ancestor is a writable folder. `what` names it for the user
    (e.g. "--out 'x.png'")."""
    existing = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise CheckpointError(f'cannot write to {what}: {existing!r} is not a writable folder; '
                              'choose another place or fix its permissions')


def pickled_callables(path):
    """The names (module.name) a plain pickle file would import when unpickled, read off its
    opcodes without running any; [] when it names none or is no pickle at all."""
    names, strings = [], []
    try:
        with open(path, 'rb') as f:
            for opcode, arg, _ in pickletools.genops(f):
                if opcode.name == 'GLOBAL':
                    names.append(str(arg).replace(' ', '.'))
                elif opcode.name == 'STACK_GLOBAL' and len(strings) >= 2:
                    names.append(f'{strings[-2]}.{strings[-1]}')
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:                       # not a pickle stream: the caller's "corrupt" holds
        return names
    return [f'GLOBAL {n}' for n in names]


def load_file(path):
    """torch.load with weights_only=True onto the CPU, with one clear error per failure."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f'{path!r} is a folder, not a checkpoint file; pass a file in it '
                              '(e.g. latest-model-ema.th)')
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint {path!r} does not exist; check the path (upstream names '
                              'files like latest-model.th, latest-model-ema.th, latest-opt.th)')
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols before refusing; our error says it better
            warnings.simplefilter('ignore', UserWarning)
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        globals_named = ([line.strip() for line in str(e).splitlines() if 'GLOBAL' in line.upper()]
                         or pickled_callables(path))
        if not globals_named:
            raise CheckpointError(f'cannot read {path!r}: it is corrupt, truncated or not a torch '
                                  'file; re-download or re-save it') from e
        raise CheckpointError(
            f'refused to load {path!r}: it holds Python objects other than tensors and plain '
            'containers, which could run code when unpickled; only weights files are accepted '
            f'(torch.load weights_only=True: {globals_named[0]})') from e
    except Exception as e:
        raise CheckpointError(f'cannot read {path!r} as a torch file ({type(e).__name__}: '
                              f'{str(e).splitlines()[0] if str(e) else ""}); it is corrupt, '
                              'truncated or not a checkpoint: re-download or re-save it') from e


def load_state_dict_file(path):
    """A model state dict from an upstream or project file, with any `module.` prefix removed."""
    sd = load_file(path)
    if isinstance(sd, dict) and 'model' in sd and isinstance(sd['model'], dict):
        sd = sd['model']
    if not isinstance(sd, dict) or not sd or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f'{os.fspath(path)!r} is not a model state dict (a mapping of '
                              'parameter names to tensors); pass a *-model.th or *-model-ema.th file')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}


@functools.lru_cache(maxsize=None)
def _preset_shapes(name):
    with torch.device('meta'):
        from .vae import VAE
        model = VAE(get_hparams(name))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _block_counts(keys):
    """(encoder blocks, decoder blocks) of a VDVAE state dict's keys."""
    def count(prefix):
        return len({k.split('.')[2] for k in keys if k.startswith(prefix)})
    return count('encoder.enc_blocks.'), count('decoder.dec_blocks.')


@functools.lru_cache(maxsize=None)
def _preset_block_counts(name):
    from .block_strings import parse_dec_blocks, parse_enc_blocks
    H = get_hparams(name)
    return (len(parse_enc_blocks(H.enc_blocks, H.image_size)),
            len(parse_dec_blocks(H.dec_blocks, H.image_size)))


def suggest_preset(sd):
    """The registered preset whose model has exactly these keys and shapes, or None. Presets with
    other numbers of blocks are passed over without building their model."""
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    counts = _block_counts(shapes)
    for name in HPARAMS_REGISTRY:
        try:
            if _preset_block_counts(name) == counts and _preset_shapes(name) == shapes:
                return name
        except (ValueError, AttributeError):
            continue                # presets of extensions may need more than get_hparams gives
    return None


def check_state_dict(model, sd, path='state dict'):
    """Raise CheckpointError naming the first missing, unexpected or mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    misshaped = [f'{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}'
                 for k in own if k in sd and sd[k].shape != own[k].shape]
    if not (missing or unexpected or misshaped):
        return
    problems = []
    for label, items in (('missing', missing), ('unexpected', unexpected),
                         ('mis-shaped (file != model)', misshaped)):
        if items:
            more = f' and {len(items) - 3} more' if len(items) > 3 else ''
            problems.append(f'{len(items)} {label}: {", ".join(items[:3])}{more}')
    preset = suggest_preset(sd)
    fix = (f'it matches preset {preset!r}: run with --hps {preset}' if preset else
           'it matches no registered preset: pass the --hps and architecture flags it was '
           'trained with')
    raise CheckpointError(f'{path!r} does not fit this model ({"; ".join(problems)}); {fix}')


def restore_params(model, path):
    """Load upstream/project weights from `path` into `model` (strict, with a clear error)."""
    sd = load_state_dict_file(path)
    check_state_dict(model, sd, os.fspath(path))
    model.load_state_dict(sd)
    return model


# ------------------------------------------------------------------------------------------------
# Optimizer state

def convert_apex_adam_state(state, optimizer):
    """Turn an apex FusedAdam state dict (step per param group) into one torch's AdamW can load
    and step (step per parameter). Torch-format dicts are returned unchanged."""
    if not isinstance(state, dict) or 'state' not in state or 'param_groups' not in state:
        raise CheckpointError('not an optimizer state dict (needs "state" and "param_groups"); '
                              'pass a *-opt.th file')
    groups = state['param_groups']
    if len(groups) != len(optimizer.param_groups) or any(
            len(g['params']) != len(o['params']) for g, o in zip(groups, optimizer.param_groups)):
        raise CheckpointError(
            f'optimizer state has {[len(g["params"]) for g in groups]} parameters per group, the '
            f'model {[len(g["params"]) for g in optimizer.param_groups]}; it is from another '
            'architecture: use the --hps it was trained with')
    per_param_state = state['state']
    if all('step' in s for s in per_param_state.values()):
        return state
    new_groups = []
    for saved, current in zip(groups, optimizer.param_groups):
        group = {k: v for k, v in current.items() if k != 'params'}
        for key in ('lr', 'betas', 'eps', 'weight_decay', 'initial_lr'):
            if key in saved:
                group[key] = tuple(saved[key]) if key == 'betas' else saved[key]
        group['params'] = list(saved['params'])
        new_groups.append(group)
        step = float(saved.get('step', 0))
        for index in saved['params']:
            if index in per_param_state:
                per_param_state[index] = dict(per_param_state[index], step=torch.tensor(step))
    params = [p for g in optimizer.param_groups for p in g['params']]
    indices = [i for g in groups for i in g['params']]
    for index, param in zip(indices, params):
        s = per_param_state.get(index)
        if s is not None and s['exp_avg'].shape != param.shape:
            raise CheckpointError(f'optimizer state for parameter {index} has shape '
                                  f'{tuple(s["exp_avg"].shape)}, the model {tuple(param.shape)}; '
                                  'it is from another architecture')
    return {'state': per_param_state, 'param_groups': new_groups}


def restore_optimizer(optimizer, path):
    """Load an upstream apex `*-opt.th` or a torch AdamW state into `optimizer`."""
    try:
        optimizer.load_state_dict(convert_apex_adam_state(load_file(path), optimizer))
    except CheckpointError as e:
        raise CheckpointError(f'{os.fspath(path)!r}: {e}') from None
    return optimizer


# ------------------------------------------------------------------------------------------------
# A set of files that must change together (model, EMA, optimizer, training state)

_COMMIT = '.checkpoint-commit.json'


def save_checkpoint_set(folder, files):
    """Write `files` ({name: object to torch.save, or a path to copy}) into `folder` so that a
    crash at any moment leaves either the whole old set or the whole new set: every file is first
    written completely as `name.pending`, then a commit record names them, then they are renamed.
    `recover_checkpoint_set` finishes or discards an interrupted save. A write that fails (a full
    disk) removes what this save wrote and raises one CheckpointError; the old set stays."""
    pending = []
    try:
        for name, obj in files.items():
            target = os.path.join(folder, name + '.pending')
            pending.append(target)
            if isinstance(obj, (str, os.PathLike)):
                with open(obj, 'rb') as src:
                    data = src.read()
                atomic_write(target, lambda f: f.write(data))
            else:
                atomic_save(obj, target)
        record = json.dumps(sorted(files)).encode()
        atomic_write(os.path.join(folder, _COMMIT), lambda f: f.write(record))
    except OSError as e:
        for path in pending:                    # no commit record: none of them is wanted
            if os.path.exists(path):
                os.unlink(path)
        raise _save_failed(folder, files, e) from e
    recover_checkpoint_set(folder)


def _save_failed(folder, files, error):
    """The CheckpointError of a save that failed with `error` (an OSError) and was rolled back."""
    prefix = os.path.commonprefix(sorted(files))
    what = prefix + '*' if prefix else ', '.join(sorted(files))
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        problem, fix = 'no space left on the device', 'free space there'
    else:
        problem, fix = error.strerror or str(error), 'fix the folder'
    return CheckpointError(f'cannot save checkpoint {what} in {folder!r}: {problem}. Nothing of '
                           'it was kept and the previous checkpoint there is intact: '
                           f'{fix} (or copy the run to another --save_dir), then continue with '
                           '--resume')


def recover_checkpoint_set(folder):
    """Complete a save whose commit record exists; drop pending files of one that never got
    there. Safe to call at any time (and called before every resume)."""
    commit = os.path.join(folder, _COMMIT)
    if os.path.exists(commit):
        with open(commit) as f:
            names = json.load(f)
        for name in names:
            pending = os.path.join(folder, name + '.pending')
            if os.path.exists(pending):
                os.replace(pending, os.path.join(folder, name))
        _fsync_dir(folder)
        os.unlink(commit)
    for name in os.listdir(folder):
        # pending files, and the temporary files of their writes that a kill cut short (which
        # `atomic_write` names .NAME.pending.XXXX.tmp): space a full disk needs back
        if name.endswith('.pending') or (name.startswith('.') and name.endswith('.tmp')
                                         and '.pending.' in name):
            os.unlink(os.path.join(folder, name))


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
