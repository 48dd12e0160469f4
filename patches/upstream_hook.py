"""Hook progcode into a checkout of openai/vdvae (or take the hook out again).

    python patches/upstream_hook.py apply PATH [--dry-run]
    python patches/upstream_hook.py revert PATH [--dry-run]

See progcode_ext/upstream/patcher.py; the same is `python -m progcode_ext.upstream.patcher`.
"""
import sys

from progcode_ext.upstream.patcher import main

if __name__ == '__main__':
    sys.exit(main())
