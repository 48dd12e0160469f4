"""The project's errors for bad input: the command lines print `error: <message>` for these and
exit with status 2, without a traceback. Any other exception is a bug (ours, or in a user's own
model or plug-in) and keeps its traceback."""


class UserError(Exception):
    """Input that cannot work (a flag, a path, a file, data); the message names the problem and
    the fix."""


class ConfigError(UserError, ValueError):
    """A flag, preset, argument or combination of them that cannot work."""
