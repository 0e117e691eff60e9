"""The one exception type the CLI turns into a single clear line and a non-zero exit."""


class SecfmError(Exception):
    """A user-facing error: bad input, missing model, unreachable service.

    The message is one line that says what is wrong and, where possible, what to do.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(" ".join(str(message).split()))  # one line, whatever was interpolated into it
        if exit_code is not None:
            self.exit_code = exit_code
