"""Errors a user can fix (a config value, a dataset, a checkpoint), and how a failed run presents them.

A bundle run evaluates our code inside MONAI's config parser, which wraps every failure in
``RuntimeError: Failed to evaluate ConfigExpression`` at the end of a long chained traceback: the one line that
says what to fix is buried. Bad input therefore raises :class:`UserInputError` (or a subclass such as
``pathosynth.data.errors.DatasetError``), and :func:`install_excepthook` (run when ``pathosynth`` is imported, which
every bundle config does in ``imports``) prints such a failure as a short hint plus the message as the last line.
``PATHOSYNTH_DEBUG=1`` prints the full chained traceback first. Every other exception (a bug) keeps Python's
usual presentation. Under ``torchrun`` each worker also writes the message to its elastic error file, so the
launcher's failure summary shows the message instead of "To enable traceback see ...".
"""

from __future__ import annotations

import json
import os
import sys
import time

__all__ = ["DEBUG_ENV", "MissingInputError", "UserInputError", "install_excepthook", "user_error_in"]

DEBUG_ENV = "PATHOSYNTH_DEBUG"


class UserInputError(ValueError):
    """Bad user input: the message names the config key or file and the problem, and says what to do."""


class MissingInputError(UserInputError, FileNotFoundError):
    """A file the run needs (a checkpoint, a datalist) does not exist; still a FileNotFoundError for callers."""


def user_error_in(exc: BaseException | None) -> UserInputError | None:
    """The first :class:`UserInputError` in ``exc`` or its ``__cause__`` / ``__context__`` chain, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _write_elastic_error_file(message: str) -> None:
    """torchrun reads a worker's error file (path in TORCHELASTIC_ERROR_FILE) into its failure summary."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": message, "extraInfo": {"py_callstack": message, "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass  # the summary then says "To enable traceback see ...", the worker's own stderr still has the message


def _hook(exc_type, exc, tb, previous=None):
    previous = previous or sys.__excepthook__
    error = user_error_in(exc)
    if error is None:
        return previous(exc_type, exc, tb)
    message = f"pathosynth: error: {error}"
    if _debug():
        previous(exc_type, exc, tb)
    else:
        print(
            f"pathosynth: the run stopped on bad input ({type(error).__name__}); "
            f"set {DEBUG_ENV}=1 for the full traceback",
            file=sys.stderr,
        )
    print(message, file=sys.stderr, flush=True)
    _write_elastic_error_file(message)


def install_excepthook() -> None:
    """Present uncaught user-input errors as their message (idempotent; other exceptions go to the previous hook)."""
    current = sys.excepthook
    if getattr(current, "_pathosynth", False):
        return

    def hook(exc_type, exc, tb):
        _hook(exc_type, exc, tb, previous=current)

    hook._pathosynth = True
    sys.excepthook = hook
