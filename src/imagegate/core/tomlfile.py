"""Read TOML files and say where in them a problem is: file, line, key, reason.

tomllib reports line numbers only for syntax errors, so `key_lines` finds the line of
every table header and key by a light scan of the text. It understands what our config,
ACL and token files use: `[table."quoted"]`, `[[array]]`, `key = value`, dotted keys.
"""

import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from imagegate.core.errors import ConfigError

Path_ = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)
_PART = re.compile(r"\s*(?:\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+))\s*(?:\.|$)")


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Parse a TOML file; every failure is a ConfigError naming the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 text") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


ModelT = TypeVar("ModelT", bound=BaseModel)


def read_model(path: Path, model: type[ModelT]) -> tuple[ModelT, dict[Path_, int]]:
    """A TOML file validated as `model`, and the line of each of its keys (for the
    caller's own checks); every failure is a ConfigError naming file, line and key."""
    data, text = read_toml(path)
    try:
        return model.model_validate(data), key_lines(text)
    except ValidationError as err:
        raise ConfigError(describe(err, path, text)) from None


def _split(dotted: str) -> tuple[str, ...]:
    return tuple(next(g for g in m.groups() if g is not None) for m in _PART.finditer(dotted))


def key_lines(text: str) -> dict[Path_, int]:
    """1-based line of each table, array entry and key, by its path."""
    lines: dict[Path_, int] = {}
    table: Path_ = ()
    array_counts: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            parts = _split(header[2])
            if header[1] == "[[":
                index = array_counts.get(parts, -1) + 1
                array_counts[parts] = index
                table = (*parts, index)
            else:
                table = parts
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, *_split(key[1])), number)
    return lines


def line_of(lines: Mapping[Path_, int], loc: Iterable[str | int]) -> int | None:
    """The line of the longest known prefix of a pydantic error location."""
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def describe(
    err: ValidationError,
    path: Path | None,
    text: str,
    origin: Callable[[list[str | int]], str | None] = lambda loc: None,
    union_tags: Mapping[str, Collection[str]] | None = None,
) -> str:
    """One line per problem: `file:line: key: reason` (or `origin: key: reason` when
    `origin` says the value came from somewhere else, such as the environment).
    `union_tags` maps a top-level table of tagged unions (e.g. `relays`) to its tags
    (relay kinds): pydantic puts the tag in the error location right after the entry's
    name, where it is not a key of the file."""
    lines = key_lines(text)
    out = []
    for problem in err.errors():
        loc = _file_location(problem["loc"], union_tags or {})
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        elif problem["type"] == "union_tag_invalid":
            context = problem.get("ctx", {})
            loc.append(context.get("discriminator", "kind").strip("'"))
            message = (
                f"unknown kind {context.get('tag')!r}; expected one of: "
                f"{context.get('expected_tags')}"
            )
        elif problem["type"] == "union_tag_not_found":
            context = problem.get("ctx", {})
            loc.append(context.get("discriminator", "kind").strip("'"))
            tags = union_tags.get(str(loc[0]), ()) if union_tags and loc else ()
            message = "missing; expected one of: " + ", ".join(repr(t) for t in sorted(tags))
        where = origin(loc)
        if where is None:
            line = line_of(lines, loc)
            where = f"{path}:{line}" if path and line else str(path or "settings")
        key = ".".join(str(p) for p in loc) or "(top level)"
        out.append(f"{where}: {key}: {message}")
    return "\n".join(out)


def _file_location(
    loc: Iterable[object], union_tags: Mapping[str, Collection[str]]
) -> list[str | int]:
    """A pydantic error location as a path in the file: the union tag at position 2
    under a tagged table is dropped; an entry named like its kind keeps its name."""
    parts = [p for p in loc if isinstance(p, str | int)]
    if len(parts) > 2 and parts[0] in union_tags and parts[2] in union_tags[str(parts[0])]:
        del parts[2]
    return parts
