"""Recognising a checkout of openai/vdvae and importing its modules by name.

A checkout is recognised by the names progcode hooks into, read from the files' syntax trees (no
upstream code runs, and the repository stores none of it): `hps.HPARAMS_REGISTRY` and
`hps.add_vae_arguments`, `vae.VAE`, `train_helpers.load_vaes` / `load_opt`, `data.set_up_data`,
`train.main`.
"""
import ast
import importlib
import os
import sys

from vdvae.errors import UserError

REQUIRED = {
    'hps.py': ('HPARAMS_REGISTRY', 'add_vae_arguments'),
    'vae.py': ('VAE',),
    'train_helpers.py': ('load_vaes', 'load_opt'),
    'data.py': ('set_up_data',),
    'train.py': ('main',),
}
# Imported in this order: later modules bind names of earlier ones (`from vae import VAE`).
MODULES = ('hps', 'utils', 'data', 'vae', 'train_helpers', 'train')
CLONE_HINT = ('point --vdvae_root (or VDVAE_ROOT) at the folder holding upstream\'s train.py, '
              'e.g. a `git clone https://github.com/openai/vdvae`')
# The official repository beside the extension: a git submodule of this repository, pinned at the
# commit the plug-in was made and tested for (`git ls-tree HEAD vdvae_upstream` shows the same).
SUBMODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), 'vdvae_upstream')
PINNED_COMMIT = 'ea35b490313bc33e7f8ac63dd8132f3cc1a729b4'


class CheckoutError(UserError, ValueError):
    """Not a checkout progcode can hook into; the message says what is missing and the fix."""


def top_level_names(path):
    """Names a Python file defines or assigns at module level."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def default_checkout():
    """The vdvae_upstream submodule, or CheckoutError saying how to fill it when it is empty."""
    if not os.path.isfile(os.path.join(SUBMODULE, 'train.py')):
        raise CheckoutError(f'no upstream checkout given, and the vdvae_upstream submodule '
                            f'({SUBMODULE}) is empty: run `git submodule update --init '
                            'vdvae_upstream` in the progcode repository (or clone it with '
                            '--recurse-submodules), or pass --vdvae_root PATH (or VDVAE_ROOT) for '
                            'a checkout elsewhere')
    return SUBMODULE


def checkout_commit(root):
    """The commit checked out in the git checkout at `root`, read from its .git metadata (a folder,
    or a file `gitdir: ...` for a submodule); None when that cannot be told."""
    git = os.path.join(root, '.git')
    try:
        if os.path.isfile(git):
            with open(git) as f:
                line = f.read().strip()
            if not line.startswith('gitdir:'):
                return None
            git = os.path.normpath(os.path.join(root, line.split(':', 1)[1].strip()))
        with open(os.path.join(git, 'HEAD')) as f:
            head = f.read().strip()
        if not head.startswith('ref:'):
            return head                             # detached, as a submodule is
        ref = head.split(':', 1)[1].strip()
        if os.path.isfile(os.path.join(git, ref)):
            with open(os.path.join(git, ref)) as f:
                return f.read().strip()
        with open(os.path.join(git, 'packed-refs')) as f:
            return next((line.split()[0] for line in f if line.rstrip().endswith(' ' + ref)), None)
    except OSError:
        return None


def warn_unless_pinned(root, out=None):
    """Name both commits when the checkout is not at the one the plug-in was made for."""
    commit = checkout_commit(root)
    if commit and commit != PINNED_COMMIT and is_main_process():
        print(f'progcode: warning: the checkout {root} is at commit {commit}; the plug-in was made '
              f'and tested for {PINNED_COMMIT} (the vdvae_upstream submodule\'s pin). Using it '
              'anyway.', file=out or sys.stderr)


def is_main_process():
    return all(os.environ.get(v, '0') == '0' for v in ('RANK', 'PMI_RANK', 'OMPI_COMM_WORLD_RANK'))


def recognise(root):
    """The checkout's absolute path (None: the vdvae_upstream submodule), or CheckoutError naming
    the first thing that is missing."""
    root = os.path.abspath(os.fspath(root or default_checkout()))
    if os.path.isfile(root):                         # the hook passes train.py's __file__
        root = os.path.dirname(root)
    if not os.path.isdir(root):
        raise CheckoutError(f'{root} is not a folder; {CLONE_HINT}')
    for name, symbols in REQUIRED.items():
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise CheckoutError(f'{root} is not an openai/vdvae checkout progcode recognises: it '
                                f'has no {name}; {CLONE_HINT}')
        try:
            defined = top_level_names(path)
        except (SyntaxError, UnicodeDecodeError) as e:
            raise CheckoutError(f'{path} cannot be parsed ({e}); restore it with git '
                                'checkout') from e
        missing = [s for s in symbols if s not in defined]
        if missing:
            raise CheckoutError(f'{root} is not an openai/vdvae checkout progcode recognises: '
                                f'{name} defines no {", ".join(missing)}; {CLONE_HINT}')
    return root


def import_modules(root):
    """{name: module} of the checkout's modules, imported from `root` (put first on sys.path)."""
    if root not in sys.path:
        sys.path.insert(0, root)
    modules = {}
    for name in MODULES:
        if name == 'train' and getattr(sys.modules.get('__main__'), '__file__', None) and \
                os.path.abspath(sys.modules['__main__'].__file__) == os.path.join(root, 'train.py'):
            continue                # the hook: train.py is running as __main__ and imports later
        if not os.path.isfile(os.path.join(root, name + '.py')):
            continue                # utils.py is not required
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise CheckoutError(f'the checkout\'s {name}.py cannot be imported ({e}); install what '
                                'it names into this Python (upstream also needs scikit-learn and '
                                'torchvision: pip install scikit-learn torchvision)') from e
        where = os.path.abspath(getattr(module, '__file__', '') or '')
        if os.path.dirname(where) != root:
            raise CheckoutError(f'a module named {name!r} from {where or "elsewhere"} is already '
                                f'imported, not {root}/{name}.py; run from a fresh process')
        modules[name] = module
    return modules
