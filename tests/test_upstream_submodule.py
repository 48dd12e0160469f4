"""vdvae_upstream: the official repository as a pinned submodule, the default checkout."""
import shutil
import subprocess
from pathlib import Path

import pytest

from progcode_ext.upstream import __main__ as upstream_main
from progcode_ext.upstream import checkout
from progcode_ext.upstream.patcher import main as patcher_main

REPO = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).parent / 'fake_upstream'
PINNED = 'ea35b490313bc33e7f8ac63dd8132f3cc1a729b4'
POPULATED = (REPO / 'vdvae_upstream' / 'train.py').is_file()


def test_the_submodule_is_a_pointer_at_the_pinned_commit():
    assert (REPO / '.gitmodules').read_text().split() == [
        '[submodule', '"vdvae_upstream"]', 'path', '=', 'vdvae_upstream',
        'url', '=', 'https://github.com/openai/vdvae.git']
    if not (REPO / '.git').exists() or shutil.which('git') is None:
        pytest.skip('not a git checkout of progcode (an installed copy): no gitlink to read')
    entry = subprocess.run(['git', 'ls-files', '--stage', 'vdvae_upstream'], cwd=REPO, text=True,
                           capture_output=True, check=True).stdout.split()
    assert entry == ['160000', PINNED, '0', 'vdvae_upstream'] and checkout.PINNED_COMMIT == PINNED
    tracked = subprocess.run(['git', 'ls-files', 'vdvae_upstream/'], cwd=REPO, text=True,
                             capture_output=True, check=True).stdout.split()
    assert tracked == ['vdvae_upstream']              # the gitlink alone: no upstream file


@pytest.mark.skipif(POPULATED, reason='vdvae_upstream is populated here: the empty case cannot be '
                                      'seen (test_the_populated_submodule_is_the_default covers it)')
def test_an_empty_submodule_says_how_to_fill_it(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv('VDVAE_ROOT', raising=False)
    with pytest.raises(checkout.CheckoutError, match='git submodule update --init vdvae_upstream'):
        checkout.recognise(None)
    for main, argv in ((upstream_main.main, ['--hps', 'svhn_stage1']),
                       (patcher_main, ['apply'])):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and 'git submodule update --init vdvae_upstream' in err
        assert '--vdvae_root' in err and 'Traceback' not in err


@pytest.mark.skipif(not POPULATED, reason='vdvae_upstream is empty here (git submodule update '
                                          '--init vdvae_upstream fills it; no network on this machine)')
def test_the_populated_submodule_is_the_default(monkeypatch):
    monkeypatch.delenv('VDVAE_ROOT', raising=False)
    assert checkout.recognise(None) == str(REPO / 'vdvae_upstream')


def fake_git(root, head, refs=None, packed=None, as_submodule=False):
    """A checkout at `root` whose git metadata says HEAD is `head` (a commit, or 'ref: ...')."""
    git = root.parent / 'modules' / root.name if as_submodule else root / '.git'
    (git / 'refs' / 'heads').mkdir(parents=True)
    (git / 'HEAD').write_text(head + '\n')
    for name, commit in (refs or {}).items():
        (git / name).write_text(commit + '\n')
    if packed:
        (git / 'packed-refs').write_text('# pack-refs with: peeled\n' + ''.join(
            f'{commit} {name}\n' for name, commit in packed.items()))
    if as_submodule:
        (root / '.git').write_text(f'gitdir: ../modules/{root.name}\n')


OTHER = '0123456789abcdef0123456789abcdef01234567'


@pytest.mark.parametrize('layout', ['detached', 'branch', 'packed', 'submodule'])
def test_the_commit_is_read_from_git_metadata(layout, tmp_path):
    root = tmp_path / 'vdvae'
    shutil.copytree(FAKE, root)
    if layout == 'detached':
        fake_git(root, OTHER)
    elif layout == 'branch':
        fake_git(root, 'ref: refs/heads/main', refs={'refs/heads/main': OTHER})
    elif layout == 'packed':
        fake_git(root, 'ref: refs/heads/main', packed={'refs/heads/main': OTHER})
    else:
        fake_git(root, OTHER, as_submodule=True)
    assert checkout.checkout_commit(str(root)) == OTHER
    assert checkout.checkout_commit(str(tmp_path)) is None             # no git metadata


def test_another_commit_is_used_with_a_warning_naming_both(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv('RANK', raising=False)
    root = tmp_path / 'vdvae'
    shutil.copytree(FAKE, root)
    fake_git(root, OTHER)
    assert patcher_main(['apply', str(root), '--dry-run']) == 0       # used anyway
    out = capsys.readouterr().out
    assert f'at commit {OTHER}' in out and PINNED in out
    (root / '.git' / 'HEAD').write_text(PINNED + '\n')
    checkout.warn_unless_pinned(str(root))
    assert 'warning' not in capsys.readouterr().err                   # the pinned one: silent
    monkeypatch.setenv('RANK', '1')
    (root / '.git' / 'HEAD').write_text(OTHER + '\n')
    checkout.warn_unless_pinned(str(root))
    assert capsys.readouterr().err == ''                              # said once, by rank 0
