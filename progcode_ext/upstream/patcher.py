"""Add (or remove) progcode's hook in a checkout of openai/vdvae, so that plain `python train.py
--hps svhn_stage1 ...` inside it runs with progcode installed.

The hook is two lines between two marker comments, inserted into train.py before its first
import statement (the anchor is found in the checkout's own file at run time; progcode stores no
upstream lines):

    # >>> progcode hook ...
    from progcode_ext.upstream import install as _progcode_install
    _progcode_install(__file__)
    # <<< progcode hook

`apply` and `revert` are idempotent, `--dry-run` prints the diff instead of writing, and a checkout
that is not recognised (checkout.recognise) or whose hook was edited is refused untouched.
"""
import argparse
import ast
import difflib
import os
import sys

from vdvae.checkpoint import atomic_write
from vdvae.errors import UserError, exit_status

from .checkout import recognise, warn_unless_pinned

BEGIN = '# >>> progcode hook: added by progcode\'s patches/upstream_hook.py; undo with its `revert`'
END = '# <<< progcode hook'
HOOK = [BEGIN,
        'from progcode_ext.upstream import install as _progcode_install',
        '_progcode_install(__file__)',
        END]


class PatchError(UserError, ValueError):
    """The file cannot be patched or unpatched safely; the message says why and what to do."""


def hook_span(lines, path):
    """(first, last) line indices of the hook block in `lines`, or None if there is none."""
    begins = [i for i, line in enumerate(lines) if line.rstrip('\r\n') == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip('\r\n') == END]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] - begins[0] != len(HOOK) - 1 or \
            [line.rstrip('\r\n') for line in lines[begins[0]:ends[0] + 1]] != HOOK:
        raise PatchError(f'{path} holds an edited or partial progcode hook (lines with "progcode '
                         'hook"); restore train.py with `git checkout train.py`, then apply again')
    return begins[0], ends[0]


def anchor_line(text, path):
    """Index of the line of train.py's first top-level import (after `from __future__` ones)."""
    for node in ast.parse(text, filename=path).body:
        if isinstance(node, ast.ImportFrom) and node.module == '__future__':
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return node.lineno - 1
    raise PatchError(f'{path} has no top-level import to put the hook before; it is not '
                     'upstream\'s train.py')


def patched_lines(lines, path, action):
    """The lines of train.py after `action` ('apply' or 'revert'), or None if nothing changes."""
    span = hook_span(lines, path)
    if action == 'revert':
        return None if span is None else lines[:span[0]] + lines[span[1] + 1:]
    if span is not None:
        return None
    newline = '\r\n' if lines and lines[0].endswith('\r\n') else '\n'
    at = anchor_line(''.join(lines), path)
    return lines[:at] + [line + newline for line in HOOK] + lines[at:]


def patch(root, action, dry_run=False, out=None):
    """Apply or revert the hook in the checkout at `root`. Returns the unified diff (empty when
    there is nothing to do)."""
    out = out or sys.stdout
    root = recognise(root)
    warn_unless_pinned(root, out)
    path = os.path.join(root, 'train.py')
    try:
        with open(path, encoding='utf-8', newline='') as f:
            lines = f.read().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as e:
        raise PatchError(f'cannot read {path} ({e}); restore it with `git checkout '
                         'train.py`') from e
    try:
        new = patched_lines(lines, path, action)
    except SyntaxError as e:
        raise PatchError(f'{path} cannot be parsed ({e}); restore it with `git checkout '
                         'train.py`') from e
    if new is None:
        state = 'applied' if action == 'apply' else 'not applied'
        print(f'{path}: the progcode hook is already {state}; nothing to do', file=out)
        return ''
    diff = ''.join(difflib.unified_diff(lines, new, 'a/train.py', 'b/train.py'))
    if dry_run:
        print(diff, end='', file=out)
        print(f'(dry run: {path} not changed)', file=out)
        return diff
    mode = os.stat(path).st_mode
    try:
        atomic_write(path, lambda f: f.write(''.join(new).encode('utf-8')))
        os.chmod(path, mode)
    except OSError as e:
        raise PatchError(f'cannot write {path} ({e.strerror}); fix its permissions') from e
    done = ('applied: `python train.py --hps svhn_stage1 ...` in the checkout now runs with '
            'progcode (it must be installed in that Python)') if action == 'apply' else 'reverted'
    print(f'{path}: {done}', file=out)
    return diff


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('action', choices=('apply', 'revert'))
    parser.add_argument('vdvae_root', nargs='?', default=os.environ.get('VDVAE_ROOT'),
                        help='the checkout of openai/vdvae (default: $VDVAE_ROOT, else the '
                             'vdvae_upstream submodule)')
    parser.add_argument('--dry-run', action='store_true', help='print the diff, change nothing')
    args = parser.parse_args(argv)
    return exit_status(patch, args.vdvae_root, args.action, args.dry_run)


if __name__ == '__main__':
    sys.exit(main())
