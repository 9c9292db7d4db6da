"""The project's user-facing error: one line that names the problem and the fix."""


class TalkingAvatarError(ValueError):
    """A user's mistake (bad file, bad argument, missing asset).

    The message is one line naming the problem and how to fix it. The CLI prints it without a
    traceback and exits with status 2. It subclasses ValueError so library callers can catch it
    generically.
    """
