"""The one error type for bad input data, so callers and tests can tell it from bugs."""


class DatasetError(ValueError):
    """Bad input data: the message names the file or case and the problem."""
