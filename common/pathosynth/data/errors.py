"""The one error type for bad input data, so callers and tests can tell it from bugs."""

from ..errors import UserInputError


class DatasetError(UserInputError):
    """Bad input data: the message names the file or case and the problem (a :class:`UserInputError`, so a failed
    bundle run ends with this message)."""
