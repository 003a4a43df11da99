"""Serving a bundle from MONAI Label: a request check its bundle infer task runs before loading anything.

MONAI Label's ``BundleInferTask`` runs a bundle's ``preprocessing`` on the request's keys (``image`` from the
datastore, ``label`` when the client uploads one). A synthesis request without the label map would fail inside
``LoadImaged`` with ``KeyError: 'label'``, which the server answers as HTTP 500. :class:`RequireRequestKeysd`, first
in the preprocessing, refuses such a request with HTTP 422 and a message that says what to send; MONAI Label maps
only FastAPI's ``HTTPException`` to a status other than 500. Outside a server (fastapi not installed) it raises
:class:`~pathosynth.errors.UserInputError` with the same message.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from ..errors import UserInputError

UNPROCESSABLE = 422  # HTTP status of a well-formed request whose content cannot be served


class RequireRequestKeysd:
    """Dictionary transform: pass ``data`` unchanged when every key of ``required`` is present (and not None), else
    refuse the request naming each missing key and what it is.

    Args:
        required: request key -> what the client must send under it (one line, shown to the user).
        model: the model's name, for the message.
    """

    def __init__(self, required: Mapping[Hashable, str], model: str = "this model") -> None:
        self.required = dict(required)
        self.model = model

    def __call__(self, data: Mapping) -> Mapping:
        missing = [key for key in self.required if data.get(key) is None]
        if missing:
            detail = f"{self.model} needs " + "; ".join(f"'{key}': {self.required[key]}" for key in missing)
            raise request_error(detail)
        return data


def request_error(detail: str) -> Exception:
    """FastAPI's HTTPException (status 422) when a server is running this code, else a UserInputError."""
    try:
        from fastapi import HTTPException
    except ImportError:
        return UserInputError(detail)
    return HTTPException(status_code=UNPROCESSABLE, detail=detail)
