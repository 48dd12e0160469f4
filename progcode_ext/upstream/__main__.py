"""Run upstream VDVAE's own training loop with progcode installed into its checkout.

    python -m progcode_ext.upstream --vdvae_root PATH --hps svhn_stage1 --distortion_target 0.0032
    mpiexec -n 8 python -m progcode_ext.upstream --vdvae_root PATH --hps svhn_stage1
    VDVAE_ROOT=PATH python -m progcode_ext.upstream --hps svhn_stage2 --stage1_path RUN_DIR

    python -m progcode_ext.upstream --hps svhn_stage1        # the vdvae_upstream submodule

Every flag but --vdvae_root goes to upstream's parser (upstream's flags plus progcode's). Without
--vdvae_root and VDVAE_ROOT, the checkout is the repository's vdvae_upstream submodule.
"""
import os
import sys

from vdvae.errors import exit_status

from .checkout import CheckoutError
from .plugin import install


def split_root(argv):
    """(the checkout from --vdvae_root or $VDVAE_ROOT, the other arguments)."""
    rest, root = [], os.environ.get('VDVAE_ROOT')
    args = iter(argv)
    for arg in args:
        if arg == '--vdvae_root':
            root = next(args, None)
        elif arg.startswith('--vdvae_root='):
            root = arg.split('=', 1)[1]
        else:
            rest.append(arg)
    return root, rest


def main(argv=None):
    root, rest = split_root(sys.argv[1:] if argv is None else argv)
    def run():
        modules = install(root)
        if 'train' not in modules:
            raise CheckoutError('train.py is already running as the main program: run it directly')
        sys.argv = [os.path.join(os.path.dirname(modules['train'].__file__), 'train.py'), *rest]
        modules['train'].main()
    return exit_status(run)


if __name__ == '__main__':
    sys.exit(main())
