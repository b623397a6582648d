"""The one kind of error a command answers with a single line: a mistake the user can fix."""


class UserError(Exception):
    """Wrong path, existing output, missing extra, bad option value...: the message names the problem
    and the fix, and the CLI prints it as one line, never a traceback."""


class NotABuildError(UserError, FileNotFoundError):
    """A path given as a build holds no fpus23 build."""
