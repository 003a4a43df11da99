"""Command-line option values as bundle configs receive them.

``python -m monai.bundle run ... --augment false`` hands the config the *string* "false" (Fire turns only
Python literals such as ``False`` into booleans), and a non-empty string is truthy: a switch read as
``if @augment`` would stay on. Configs read such switches through :func:`as_flag`.
"""

from __future__ import annotations

__all__ = ["as_flag"]

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def as_flag(value, name: str = "option") -> bool:
    """``value`` as a bool: JSON/Python booleans, 0/1, or the strings true/false, yes/no, on/off, 1/0 (any case);
    anything else is an error naming the option (a typo must not silently mean "off")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")
