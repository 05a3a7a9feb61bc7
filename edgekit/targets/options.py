"""Typed target options: each target declares its `-O NAME=VALUE` options once, with type, accepted values, default
and a line of help; the CLI, `edgekit targets`, `edgekit export --help-target` and the manifest read the same table.

`coerce` turns what a user gave (a CLI string, or a Python value) into the declared type before any work, failing
with UnsupportedOption naming the option, the bad value and what is accepted. The targets' own plan functions still
check combinations (quant 'source' fixes the groups, ...); tests/core/test_target_options.py passes every declared
value through them so the two cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.errors import UnsupportedOption

if TYPE_CHECKING:
    from edgekit.targets.base import Capabilities

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
TYPES = ("int", "bool", "str", "path")


@dataclass(frozen=True)
class Option:
    name: str
    type: str = "str"                      # one of TYPES
    choices: tuple[Any, ...] | None = None  # None: any value of the type
    default: Any = None                     # None: decided by the target (the help says how)
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"option {self.name}: type {self.type!r} is not one of {', '.join(TYPES)}")

    def parse(self, value: Any, target: str) -> Any:
        """`value` in this option's type; UnsupportedOption naming what is accepted."""
        try:
            typed = self._typed(value)
        except (TypeError, ValueError):
            raise UnsupportedOption(f"{self.name} {value!r} is not {self._kind()}; accepted: {self.accepted()} "
                                    f"(option of target {target!r})") from None
        if self.choices is not None and typed not in self.choices:
            raise UnsupportedOption(f"{self.name} {value!r} is not supported; supported: {self.accepted()} "
                                    f"(option of target {target!r})")
        return typed

    def _typed(self, value: Any) -> Any:
        if self.type == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError(value)
        if isinstance(value, (dict, list, tuple)):
            raise TypeError(value)
        return str(value)

    def _kind(self) -> str:
        return {"int": "an integer", "bool": "true or false", "str": "a string", "path": "a file path"}[self.type]

    def accepted(self) -> str:
        if self.choices is not None:
            return ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)
        return self._kind()


def specs(caps: Capabilities) -> dict[str, Option]:
    """name -> Option; a plugin that lists bare names gets untyped string options."""
    return {o.name: o for o in (x if isinstance(x, Option) else Option(str(x)) for x in caps.options)}


def names(caps: Capabilities) -> tuple[str, ...]:
    return tuple(specs(caps))


def coerce(target: str, caps: Capabilities, options: dict[str, Any]) -> dict[str, Any]:
    """The options in their declared types; UnsupportedOption for an unknown name (naming the known ones) or a bad
    value (naming the accepted ones)."""
    table = specs(caps)
    unknown = sorted(set(options) - set(table))
    if unknown:
        raise UnsupportedOption(f"option(s) {', '.join(unknown)} are not known to target {target!r}; "
                                f"known: {', '.join(table) or 'none'}")
    return {k: table[k].parse(v, target) for k, v in options.items()}


def help_rows(caps: Capabilities) -> list[tuple[str, str, str, str]]:
    """(name, accepted values, default, help) per option, for `edgekit targets` and `export --help-target`."""
    return [(o.name, o.accepted(), "(target decides)" if o.default is None else str(o.default).lower()
             if isinstance(o.default, bool) else str(o.default), o.help) for o in specs(caps).values()]
