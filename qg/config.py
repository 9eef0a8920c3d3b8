"""Recipes: a dataclass, a YAML file that sets its defaults, `--key value` overrides on the command line."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser

from qg.cli import UserError


def _check_type(name: str, value: object, annotation: object) -> None:
    """Reject a YAML value of the wrong type (argparse only converts strings it reads itself)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation):
        if value is not None:
            (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
            _check_type(name, value, inner)
        return
    if origin is Literal:
        ok = value in typing.get_args(annotation)
        expected = " | ".join(map(repr, typing.get_args(annotation)))
    elif origin is list:
        (item,) = typing.get_args(annotation)
        ok = isinstance(value, list) and all(isinstance(v, item) for v in value)
        expected = f"list of {item.__name__}"
    elif annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "float"
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "int"
    else:
        ok = isinstance(value, annotation)
        expected = annotation.__name__
    if not ok:
        raise UserError(f"config key '{name}' should be {expected}, got {value!r}")


def parse_config(cls: type, argv: list[str] | None = None, description: str | None = None):
    """Parse `--config RECIPE.yaml` plus `--key value` overrides into `cls`; a bad recipe is a `UserError`.

    The recipe sets defaults, the command line wins. Unknown keys and values of the wrong type are refused
    before anything heavy (model, data) is loaded.
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(cls, description=description)
    parser.add_argument("--config", help="YAML recipe (configs/*.yaml); command-line flags override its values.")
    pre, _ = parser.parse_known_args(argv)  # only to find --config; --help exits here with the full flag list
    if pre.config:
        path = Path(pre.config)
        if not path.is_file():
            raise UserError(f"config file {path} not found (recipes are in configs/)")
        try:
            recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(recipe, dict):
            raise UserError(f"config file {path} must be a mapping of keys to values")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise UserError(f"config file {path}: unknown key(s) {', '.join(unknown)}; see --help for the keys")
        for key, value in recipe.items():
            _check_type(key, value, hints[key])
        parser.set_defaults(**recipe)
    try:
        namespace, extra = parser.parse_known_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0:
            raise
        raise UserError("bad command-line arguments (see the line above, or --help)") from None
    if extra:
        raise UserError(f"unknown argument(s) {' '.join(extra)}; see --help")
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)}
    return cls(**values), pre.config


def config_to_yaml(config: object) -> str:
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False, allow_unicode=True)
