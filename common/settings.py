"""Settings dataclasses that are also command-line options: each default and help text is written once, in the
dataclass field, and the option parser is built from the fields.

    @dataclass
    class FitSettings:
        n_iters: int = setting(30000, "training iterations")

    add_settings(parser, FitSettings)          # --n_iters (type int, default 30000, that help)
    FitSettings.from_args(args)                # back from the parsed options

A field's parser type is its default's type (a bool becomes a 0/1 int option, as the release's configs write them;
a list an appended ``type=int`` option); ``setting(..., action="store_true")`` or ``type=...`` overrides that.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

PARSER_KEYS = ("type", "action", "choices", "aliases", "option")


def setting(default: Any, help: str, **parser: Any) -> Any:
    """A dataclass field with its default and its option help (``parser``: ``type``, ``action``, ``choices``,
    ``option`` (the option's name when it is not the field's), ``aliases`` (other option names, e.g. the
    release's))."""
    unknown = set(parser) - set(PARSER_KEYS)
    if unknown:
        raise TypeError(f"setting(): unknown parser keys {sorted(unknown)}")
    metadata = {"help": help, **parser}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def default_of(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def add_settings(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings: type,
                 names: Sequence[str] | None = None, defaults: dict[str, Any] | None = None) -> None:
    """Add an option for each field of the ``settings`` dataclass that has help (or those in ``names``, in order).

    ``defaults`` overrides a field's default for this parser only (e.g. a default chosen at run time).
    """
    fields = {f.name: f for f in dataclasses.fields(settings) if "help" in f.metadata}
    for name in names if names is not None else list(fields):
        field = fields[name]
        meta = field.metadata
        default = (defaults or {}).get(name, default_of(field))
        flags = [f"--{meta.get('option', name)}", *(f"--{alias}" for alias in meta.get("aliases", ()))]
        options: dict[str, Any] = {"help": meta["help"]}
        if meta.get("action") == "store_true":
            options |= {"action": "store_true", "default": bool(default)}
        elif isinstance(default, list) or meta.get("action") == "append":
            options |= {"action": "append", "type": meta.get("type", int), "default": None}
        else:
            kind = meta.get("type") or (int if isinstance(default, bool) else type(default))
            options |= {"type": kind, "default": int(default) if isinstance(default, bool) else default}
        if "choices" in meta:
            options["choices"] = meta["choices"]
        parser.add_argument(*flags, **options)


def settings_from_args(settings: type, args: argparse.Namespace):
    """An instance of ``settings`` from parsed options: each field from its option (the field's name, or its
    ``option``); options missing or None keep the field's default."""
    values = {}
    for field in dataclasses.fields(settings):
        value = getattr(args, field.metadata.get("option", field.name), None)
        if value is not None:
            values[field.name] = value
    return settings(**values)
