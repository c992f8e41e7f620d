"""Typed configs on the command line and in YAML, with one-line errors.

A config is a dataclass whose fields carry a docstring each; nested dataclass fields are
flattened, so every leaf field is one option: `n_steps` is `--n-steps` on the command line
and `n_steps:` in a preset. Values from both places go through the same typed parsing.
A field whose values come from a list known only at run time (a registry) says so with
`field(..., metadata={"choices": callable_returning_names})`: --help shows `{a,b,c}` and
any other value is a one-line error naming the choices.
(tyro builds the same thing, but reports errors as multi-line boxes; `drl` promises one
line and exit code 2.)
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn

from agents.config import ConfigError, option

_UNIONS = (typing.Union, types.UnionType)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exits with 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf option of a (possibly nested) config."""

    name: str
    owner: Any  # the dataclass instance holding the field
    type: Any
    doc: str
    choices: Callable[[], Sequence[str]] | None = None  # the field's metadata["choices"]

    def parse(self, raw: Any) -> Any:
        """`raw` as a value of this field, or ValueError (also for a value not among its choices)."""
        value = parse_value(self.type, raw)
        if self.choices is not None and value is not None and value not in tuple(self.choices()):
            raise ValueError
        return value

    def describe(self) -> str:
        """What the field accepts, for error messages: "an integer", "one of a, b"."""
        if self.choices is None:
            return _describe(self.type)
        return "one of " + ", ".join(map(str, self.choices()))

    def metavar(self) -> str:
        """How --help shows the field's value: INT, {a,b}."""
        if self.choices is None:
            return _metavar(self.type)
        return "{" + ",".join(map(str, self.choices())) + "}"


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of `cls` and of its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def leaves(cfg: Any) -> dict[str, Leaf]:
    """Every leaf field of the config instance `cfg`, nested dataclasses flattened."""
    out: dict[str, Leaf] = {}
    hints = typing.get_type_hints(type(cfg))
    docs = field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(leaves(value))
        else:
            out[f.name] = Leaf(f.name, cfg, hints[f.name], docs.get(f.name, ""), f.metadata.get("choices"))
    return out


def _is_optional_bool(tp: Any) -> bool:
    """Whether `tp` is `bool | None`."""
    return typing.get_origin(tp) in _UNIONS and set(typing.get_args(tp)) == {bool, type(None)}


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in _UNIONS:
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return "a list of " + _describe(args[0])
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "none"}.get(
        tp, str(tp)
    )


def _metavar(tp: Any) -> str:
    """How --help shows an option's value: INT, FLOAT, {a,b}; optional values add |none."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if origin in _UNIONS:
        return "|".join(_metavar(a) if a is not type(None) else "none" for a in args)
    if origin is tuple:
        return _metavar(args[0])
    return tp.__name__.upper()


def parse_value(tp: Any, raw: Any) -> Any:
    """Convert `raw` (a command-line string or a YAML value) to the type `tp`, or raise ValueError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS:
        if type(None) in args and (raw is None or str(raw).lower() in ("none", "null")):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(arg, raw)
            except ValueError:
                pass
        raise ValueError
    if origin is Literal:
        if raw in args:
            return raw
        raise ValueError
    if origin is tuple:
        items = raw if isinstance(raw, (list, tuple)) else str(raw).replace(",", " ").split()
        return tuple(parse_value(args[0], item) for item in items)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise ValueError
    if tp is int:
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, int):
            return raw
        number = float(raw)  # accepts 1e5 and 100_000
        if not number.is_integer():
            raise ValueError
        return int(number)
    if tp is float:
        if isinstance(raw, bool):
            raise ValueError
        return float(raw)
    if tp is str:
        if isinstance(raw, (dict, list)):
            raise ValueError
        return str(raw)
    raise TypeError(f"unsupported config type {tp}")


def set_values(cfgs: Any, values: dict[str, Any], source: str) -> None:
    """Set leaf fields of the config(s) `cfgs` from `values` (e.g. a preset), typed; unknown keys are errors."""
    fields: dict[str, Leaf] = {}
    for cfg in cfgs if isinstance(cfgs, (list, tuple)) else [cfgs]:
        fields.update(leaves(cfg))
    for key, raw in values.items():
        leaf = fields.get(key)
        if leaf is None:
            raise ConfigError(f"unknown option {key!r} in {source}")
        try:
            value = leaf.parse(raw)
        except ValueError:
            raise ConfigError(f"{key} in {source} must be {leaf.describe()}, got {raw!r}") from None
        setattr(leaf.owner, key, value)


def add_arguments(parser: argparse.ArgumentParser, cfg: Any, title: str, skip: tuple[str, ...] = ()) -> None:
    """Add one option per leaf field of `cfg`, with the current values as defaults."""
    group = parser.add_argument_group(title)
    for name, leaf in leaves(cfg).items():
        if name in skip:
            continue
        default = getattr(leaf.owner, name)
        helptext = f"{leaf.doc} (default: {default})".replace("%", "%%")
        if leaf.type is bool or _is_optional_bool(leaf.type):  # --name / --no-name (unset: the default, maybe none)
            group.add_argument(
                option(name), dest=name, action=argparse.BooleanOptionalAction, default=default, help=helptext
            )
            continue

        def convert(raw: str, leaf: Leaf = leaf) -> Any:
            try:
                return leaf.parse(raw)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {leaf.describe()}, got {raw!r}") from None

        nargs = "+" if typing.get_origin(leaf.type) is tuple else None
        group.add_argument(
            option(name),
            dest=name,
            type=convert,
            nargs=nargs,
            default=default,
            help=helptext,
            metavar=leaf.metavar(),
        )


def apply_namespace(cfg: Any, namespace: argparse.Namespace) -> None:
    """Copy parsed option values back into the leaf fields of `cfg`."""
    for name, leaf in leaves(cfg).items():
        if hasattr(namespace, name):
            value = getattr(namespace, name)
            if isinstance(value, list):  # nargs="+" gives a list of already-parsed items
                value = tuple(v for item in value for v in (item if isinstance(item, tuple) else (item,)))
            setattr(leaf.owner, name, value)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of the config (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config of class `cls` from `to_dict` output (nested mappings flattened)."""
    cfg = cls()
    flat: dict[str, Any] = {}

    def flatten(d: dict[str, Any]) -> None:
        for key, value in d.items():
            if isinstance(value, dict):
                flatten(value)
            else:
                flat[key] = value

    flatten(data)
    set_values(cfg, flat, "the saved config")
    return cfg


def warn(message: str) -> None:
    print(f"drl: warning: {message}", file=sys.stderr)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer (also written 1e5) of at least `minimum`."""

    def convert(raw: str) -> int:
        try:
            value = int(float(raw)) if "e" in raw.lower() else int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {raw!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return convert
