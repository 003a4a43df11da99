"""Command-line option values as bundle configs receive them, and a check of the command line before any work.

``python -m monai.bundle run ... --augment false`` hands the config the *string* "false" (Fire turns only
Python literals such as ``False`` into booleans), and a non-empty string is truthy: a switch read as
``if @augment`` would stay on. Configs read such switches through :func:`as_flag`.

MONAI applies every ``--key value`` of ``monai.bundle run`` to the config unchecked: a misspelt key
(``--roi_sise``) is added as a new key nobody reads, and a value of the wrong form (``--roi_size [48,48]`` for a
3D crop, ``--max_steps abc``) fails deep inside MONAI or torch without naming the key. :func:`check_overrides`,
the first entry of every workflow's ``initialize``, reads the command line the way ``monai.bundle run`` does
(Fire), loads the same config files and refuses such overrides before any work, naming the key, the expected
form and the closest known key.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import UserInputError

__all__ = ["as_flag", "bundle_command_line", "check_overrides", "override_problems"]

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
# list keys whose number of entries is fixed by the data or the network (spatial sizes, spacings, value ranges)
_FIXED_LENGTH_SUFFIXES = ("size", "spacing", "range")


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
    raise UserInputError(f"{name} must be true or false, got {value!r}")


def bundle_command_line(argv: Sequence[str] | None = None) -> dict | None:
    """The arguments ``python -m monai.bundle run|run_workflow`` received (``argv`` default ``sys.argv``), parsed
    as Fire parses them: ``{"command": ..., "args": {name: value}}`` with positional arguments mapped to the names
    of MONAI's function, or None when this process is not such a command (a test, MONAI Label, a script)."""
    argv = list(sys.argv if argv is None else argv)
    is_bundle = len(argv) >= 2 and Path(argv[0]).parts[-3:] == ("monai", "bundle", "__main__.py")
    if not is_bundle or argv[1] not in ("run", "run_workflow"):
        return None
    from fire.parser import DefaultParseValue
    from monai.bundle import scripts

    command = argv[1]
    positional, args = [], {}
    tokens = argv[2:]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":  # Fire's own flags (--help, --trace, ...) follow
            break
        if token.startswith("--") and len(token) > 2:
            name, has_value, value = token[2:].partition("=")
            if not has_value:
                if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                    value, i = tokens[i + 1], i + 1
                else:
                    value = "True"  # a bare --flag is True for Fire
            args[name.replace("-", "_")] = DefaultParseValue(value)
        else:
            positional.append(DefaultParseValue(token))
        i += 1
    parameters = inspect.signature(getattr(scripts, command)).parameters.values()
    names = [p for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]
    for param, value in zip(names, positional):
        args.setdefault(param.name, value)
    return {"command": command, "args": args}


def _run_arguments() -> set[str]:
    """Names ``monai.bundle run`` / ``run_workflow`` and the workflow they create take themselves (not config keys)."""
    from monai.bundle import ConfigWorkflow, scripts

    names = set()
    for fn in (scripts.run, scripts.run_workflow, scripts.create_workflow, ConfigWorkflow.__init__):
        names |= {p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD}
    return names - {"self"}


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """Refuse command-line overrides of ``monai.bundle run`` that name no config key or whose value does not have
    the form of the key's default (see :func:`override_problems`); a no-op when the process is not a
    ``monai.bundle run`` command. Raises :class:`~pathosynth.errors.UserInputError` listing every problem."""
    parsed = bundle_command_line(argv)
    if parsed is None:
        return
    from monai.bundle import ConfigParser
    from monai.bundle.scripts import update_kwargs
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    # as MONAI merges them: the args file's values, then the command line's
    args = update_kwargs(args=parsed["args"].get("args_file"), **parsed["args"])
    config_file = args.get("config_file")
    if not config_file:
        return  # MONAI itself reports the missing config file
    files = [str(f) for f in (config_file if isinstance(config_file, (list, tuple)) else [config_file])]
    config = ConfigParser.load_config_files(config_file)
    meta_file = args.get("meta_file") or str(Path(ConfigParser.split_path_id(files[0])[0]).parent / "metadata.json")
    if all(os.path.isfile(f) for f in (meta_file if isinstance(meta_file, (list, tuple)) else [meta_file])):
        config["_meta_"] = ConfigParser.load_config_files(meta_file)
    tracking = args.get("tracking")
    if tracking is not None:  # MONAI adds the tracking settings' keys (tracking_uri, experiment_name, ...)
        settings = DEFAULT_EXP_MGMT_SETTINGS.get(tracking) if isinstance(tracking, str) else None
        settings = settings or ConfigParser.load_config_files(tracking)
        for key, value in settings.get("configs", {}).items():
            config.setdefault(key, value)
    run_args = _run_arguments()
    overrides = {k: v for k, v in args.items() if k not in run_args}
    problems = override_problems(config, overrides, [Path(f).name for f in files])
    if problems:
        if len(problems) == 1:
            raise UserInputError(problems[0])
        raise UserInputError(f"{len(problems)} command-line overrides are wrong:\n  " + "\n  ".join(problems))


def override_problems(config: Mapping, overrides: Mapping, sources: Sequence[str] = ()) -> list[str]:
    """One message per override in ``overrides`` ({config id: value}, ids nested with ``#``) that ``config``
    (the merged config files) does not accept:

    - an id that is not in the config: a misspelling MONAI would silently add as a new key (the closest known
      ids are suggested). A new argument of a component (a dict with ``_target_``) is accepted when the target's
      signature takes it (a target taking ``**kwargs`` takes anything);
    - a value whose form differs from the default's: an int, float or bool default needs that type (a bool
      also takes true/false, yes/no, on/off, 1/0 as :func:`as_flag` reads them; a number also takes a list of
      such numbers, MONAI's one value per spatial dimension); a list default needs a list with elements of the
      default's element type, and, for keys naming a size, spacing or range, as many entries (or ``spatial_dims``
      entries, where the config has that key); a dict default needs a dict.

    A null default accepts anything, an expression default (``$...``, ``@...``) cannot be typed, and a value
    given as an expression, reference or macro (``$...``, ``@...``, ``%...``) is not checked here.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser(dict(config))
    spatial_dims = overrides.get("spatial_dims", config.get("spatial_dims"))
    spatial_dims = spatial_dims if isinstance(spatial_dims, int) and not isinstance(spatial_dims, bool) else None
    where = f" (not in {', '.join(sources)})" if sources else ""
    problems = []
    for key, value in overrides.items():
        if value is None:
            continue  # monai.bundle run ignores None values
        key = str(key)
        if any(key.startswith(other + "#") for other in overrides):
            continue  # nested in another override, which is checked itself
        if key not in parser:
            parent, _, leaf = key.rpartition("#")
            arguments = _component_arguments(parser[parent] if parent and parent in parser else None)
            if arguments is None or leaf in arguments:
                continue  # a new argument of a component that takes it, or one we cannot inspect
            if arguments:
                close = difflib.get_close_matches(leaf, sorted(arguments), n=3, cutoff=0.6)
                hint = f"; did you mean {' or '.join(f'--{parent}#{c}' for c in close)}?" if close else ""
                problems.append(f"--{key}: {parser[parent]['_target_']} has no argument {leaf!r}{hint}")
            else:
                problems.append(f"--{key} is not a config key{where}{_suggestion(parser, key)}")
            continue
        problem = _form_problem(parser[key], value) or _fixed_length_problem(key, parser[key], value, spatial_dims)
        if problem:
            problems.append(f"--{key} {problem}, got {value!r}")
    return problems


def _suggestion(parser, key: str) -> str:
    parent = key.rpartition("#")[0]
    if parent and parent in parser and isinstance(parser[parent], (Mapping, list)):
        node = parser[parent]
        candidates = [f"{parent}#{k}" for k in (node if isinstance(node, Mapping) else range(len(node)))]
    elif parent:
        candidates = _all_ids(parser.get())
    else:
        candidates = list(parser.get())
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    if not close:
        return "; check the key against the bundle's configs"
    return f"; did you mean {' or '.join('--' + c for c in close)}?"


def _component_arguments(node) -> set[str] | None:
    """For a component (a dict with ``_target_``): the argument names its target takes (plus MONAI's ``_..._`` keys),
    or None when it takes any (``**kwargs``) or cannot be inspected; for any other node an empty set."""
    if not (isinstance(node, Mapping) and "_target_" in node):
        return set()
    from pydoc import locate

    from monai.bundle import ConfigComponent

    try:
        target = node["_target_"]
        component = locate(ConfigComponent(dict(node)).resolve_module_name()) if not _is_expression(target) else None
        parameters = inspect.signature(component).parameters.values() if component is not None else None
    except (TypeError, ValueError, ImportError):
        return None
    if parameters is None or any(p.kind == p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters} | {"_target_", "_disabled_", "_requires_", "_desc_", "_mode_"}


def _all_ids(config, prefix: str = "") -> list[str]:
    ids = []
    items = config.items() if isinstance(config, Mapping) else enumerate(config) if isinstance(config, list) else ()
    for k, v in items:
        full = f"{prefix}#{k}" if prefix else str(k)
        ids.append(full)
        ids += _all_ids(v, full)
    return ids


def _is_expression(value) -> bool:
    return isinstance(value, str) and value[:1] in ("$", "@", "%")


def _kind(value) -> str | None:
    """The checked type of a default value, or None when any value goes."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping) and "_target_" not in value:
        return "dict"
    return None


def _fits(kind: str, value) -> bool:
    if kind == "bool":
        word = isinstance(value, (int, str)) and str(value).strip().lower() in _TRUE + _FALSE
        return isinstance(value, bool) or word
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "list":
        return isinstance(value, (list, tuple))
    return isinstance(value, Mapping)


_FORM = {"bool": "true or false", "int": "an integer", "float": "a number", "list": "a list", "dict": "a dict"}
_ELEMENTS = {"bool": "booleans", "int": "integers", "float": "numbers"}


def _form_problem(default, value) -> str | None:
    """Why ``value`` cannot replace ``default`` (None when it can)."""
    kind = _kind(default)
    if kind is None or _is_expression(default) or _is_expression(value):
        return None
    per_axis = (
        kind in ("int", "float")
        and isinstance(value, (list, tuple))
        and bool(value)
        and all(_fits(kind, v) for v in value)
    )  # MONAI's "a number, or one per spatial dimension" (e.g. a factor per axis)
    if not (_fits(kind, value) or per_axis):
        return f"expects {_FORM[kind]} like its default {default!r}"
    if kind != "list":
        return None
    kinds = {_kind(d) for d in default if not _is_expression(d)}
    element = "float" if kinds == {"int", "float"} else kinds.pop() if len(kinds) == 1 else None
    if element in _ELEMENTS and any(not _is_expression(v) and not _fits(element, v) for v in value):
        return f"expects a list of {_ELEMENTS[element]} like its default {list(default)!r}"
    return None


def _fixed_length_problem(key: str, default, value, spatial_dims: int | None = None) -> str | None:
    """A size, spacing or range keeps its number of entries, or takes one per spatial dimension when the config has a
    ``spatial_dims`` (a 2-D config switched to 3-D on the command line gives its sizes a third entry)."""
    sized = key.rpartition("#")[2].endswith(_FIXED_LENGTH_SUFFIXES)
    if not (sized and isinstance(default, (list, tuple)) and isinstance(value, (list, tuple))):
        return None
    if len(value) in (len(default), spatial_dims):
        return None
    switched = spatial_dims not in (None, len(default))
    also = f" or one per spatial dimension (spatial_dims {spatial_dims})" if switched else ""
    return f"expects {len(default)} entries like its default {list(default)!r}{also}"
