"""The project's errors for bad input: the command lines print `error: <message>` for these and
exit with status 2, without a traceback. Any other exception is a bug (ours, or in a user's own
model or plug-in) and keeps its traceback."""
import sys


class UserError(Exception):
    """Input that cannot work (a flag, a path, a file, data); the message names the problem and
    the fix."""


class ConfigError(UserError, ValueError):
    """A flag, preset, argument or combination of them that cannot work."""


def exit_status(fn, *args):
    """A command line's ending: 0 when `fn(*args)` returns, 2 with one `error:` line on stderr
    when it raises a UserError."""
    try:
        fn(*args)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0
