"""`SpecError` (one `FILE:LINE:COL: key.path: reason` line) and the translation of pydantic's
validation errors into it: each error's `loc` is mapped to the YAML position recorded by the
loader (`Doc.marks`), union-branch noise is dropped, and pydantic's messages are rewritten as
short human reasons ("expected an integer, got a string", "unknown key (allowed: ...)").
No message quotes a value from the file (pydantic's own messages and `input` may): the
position and the key path say where, the reason says why.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.spec import models
from reconciler.spec.models import Loc, Spec, SpecValueError, loc_str

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}

_PATTERNS = {
    models.NAME_RE: "not a valid name (letters, digits, '_', '.', '-', starting with a letter or digit; "
    "at most 63 characters)",
    models.IFNAME_RE: "not a valid interface name (1 to 15 characters: letters, digits, '_', '.', '@', '-'; "
    "not starting with '-')",
    models.UNIT_RE: "not a valid systemd unit name (letters, digits, ':', '_', '.', '@', '\\', '-'; "
    "not starting with '-', ':' or '.')",
    models.ABS_PATH_RE: "must be an absolute path (starting with /) without control characters",
    models.FSTYPE_RE: "not a valid file system type (a-z, 0-9, '_', '.'; at most 32 characters)",
    models.MOUNT_OPT_RE: "not a valid mount option (letters, digits, '_', '=', '.', ',', ':', '/', '+', '-'; "
    "not starting with '-')",
    models.PG_USER_RE: "not a valid user name (letters, digits, '_', not starting with a digit; at most 63)",
}


class SpecError(Exception):
    """A problem in the spec (or its ips_file), located at FILE:LINE:COL and a key path."""

    def __init__(self, file: str, line: int, col: int, key: str, reason: str) -> None:
        self.file, self.line, self.col, self.key = file, line, col, key
        self.reason = " ".join(reason.split())  # always one line
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.key}: {self.reason}"


@dataclass
class Doc:
    """Positions of a loaded YAML document: loc -> (key mark or None, value mark)."""

    path: str
    marks: dict[Loc, tuple[Any, Any]] = field(default_factory=dict)

    def pos(self, loc: Loc, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the value at `loc` (its key with key=True), else of the
        nearest parent present; (1, 1) for the top level."""
        while loc:
            if loc in self.marks:
                kmark, vmark = self.marks[loc]
                mark = kmark if key and kmark is not None else vmark
                return mark.line + 1, mark.column + 1
            loc, key = loc[:-1], True
        return 1, 1


def describe(v: Any) -> str:
    """How an input value is named in a message, by its kind only (never its text): a
    string, an integer, a list, ...  A boolean is named with its value: YAML reads yes/no/
    on/off as booleans, and true/false says so without quoting the file."""
    if v is None:
        return "an empty value"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "an empty string" if not v else "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return {"date": "a date", "datetime": "a timestamp", "bytes": "binary data"}.get(type(v).__name__, "a value")


@dataclass
class _Err:
    path: Loc  # the part of pydantic's loc present in the document (where to point)
    shown: Loc  # the key path printed
    full: Loc  # pydantic's loc, union tags included (to find the model)
    err: ErrorDetails
    on_key: bool = False  # point at the key rather than the value


def from_validation_error(exc: ValidationError, doc: Doc) -> SpecError:
    """The single most useful error (the first in the file), as a SpecError."""
    errs = [_resolve(e, doc) for e in exc.errors()]
    errs = [e for e in errs if not _is_type_err(e) or not any(_under(o.shown, e.path) for o in errs)]
    groups: dict[Loc, list[_Err]] = {}
    for e in errs:
        groups.setdefault(e.shown, []).append(e)
    found = [_group_error(group, doc) for group in groups.values()]
    return min(found, key=lambda err: (err.line, err.col))


def _under(deeper: Loc, loc: Loc) -> bool:
    return len(deeper) > len(loc) and deeper[: len(loc)] == loc


def _is_type_err(e: _Err) -> bool:
    return e.err["type"] in _TYPE_WORDS or e.err["type"] == "literal_error"


def _resolve(err: ErrorDetails, doc: Doc) -> _Err:
    loc = tuple(err["loc"])
    exc = (err.get("ctx") or {}).get("error")
    if isinstance(exc, SpecValueError):
        loc = loc + tuple(exc.loc)
    path: Loc = ()
    on_key = err["type"] in ("missing", "extra_forbidden")
    for comp in loc:
        if path + (comp,) in doc.marks:
            path = path + (comp,)
        elif comp == "[key]":
            on_key = True
    shown = path
    if isinstance(exc, SpecValueError):
        shown = loc  # a Spec-level check: no union tags in it
    elif err["type"] == "missing":
        shown = path + (loc[-1],)
    return _Err(path, shown, loc, err, on_key)


def _group_error(group: list[_Err], doc: Doc) -> SpecError:
    """One error per printed key path; union branches' type errors are merged."""
    real = [e for e in group if not _is_type_err(e)]
    e = real[0] if real else group[0]
    if not real and len(group) > 1:
        wanted: list[str] = []
        for g in group:
            word = _TYPE_WORDS.get(g.err["type"]) or str((g.err.get("ctx") or {}).get("expected", "?"))
            if word not in wanted:
                wanted.append(word)
        reason = f"expected {' or '.join(wanted)}, got {describe(e.err['input'])}"
    else:
        reason = _reason(e)
    target, on_key = e.path, e.on_key
    if e.err["type"] == "too_long":
        excess = _first_excess(e)
        target, on_key = (excess, True) if excess else (e.path, False)
    return SpecError(doc.path, *doc.pos(target, key=on_key), loc_str(e.shown) or "(file)", reason)


def _first_excess(e: _Err) -> Loc | None:
    """The loc of the first item beyond max_length (so the error points at it)."""
    n, value = e.err.get("ctx", {}).get("max_length"), e.err["input"]
    if isinstance(n, int) and isinstance(value, (list, dict)) and len(value) > n:
        return e.path + ((n,) if isinstance(value, list) else (list(value)[n],))
    return None


def _reason(e: _Err) -> str:
    t, ctx, v = e.err["type"], e.err.get("ctx") or {}, e.err["input"]
    if t in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[t]}, got {describe(v)}"
    if t == "missing":
        return "required key is missing"
    if t == "extra_forbidden":
        return _unknown_key(e)
    if t == "value_error":
        exc = ctx.get("error")
        return exc.reason if isinstance(exc, SpecValueError) else str(exc)
    if t == "string_pattern_mismatch":
        return _pattern(ctx.get("pattern", ""), v)
    if t == "literal_error":
        return f"expected {ctx.get('expected')}, got {describe(v)}"
    bounds = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le"),
              "greater_than": ("greater than", "gt"), "less_than": ("less than", "lt")}
    if t in bounds:
        word, k = bounds[t]
        return f"must be {word} {ctx.get(k)}"
    if t == "string_too_long":
        return f"too long: at most {ctx.get('max_length')} characters"
    if t == "too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"needs at least {n} entries"
    if t == "too_long":
        return f"at most {ctx.get('max_length')} entries allowed, got {len(v) if hasattr(v, '__len__') else '?'}"
    return f"invalid value ({t})"  # pydantic's msg may quote the input


def _pattern(pattern: str, v: Any) -> str:
    if pattern == models.IFNAME_RE and isinstance(v, str) and len(v) > 15:
        return "interface name too long: at most 15 characters (Linux IFNAMSIZ)"
    if isinstance(v, str) and models.CONTROL_CHARS.intersection(v):
        return _PATTERNS.get(pattern, "invalid value") + "; it contains a control character"
    return _PATTERNS.get(pattern) or f"invalid value (must match {pattern})"


def _unknown_key(e: _Err) -> str:
    allowed = _fields_at(e.full[:-1])
    name = str(e.full[-1])
    if not allowed:
        return "unknown key"
    hint = difflib.get_close_matches(name, allowed, n=1)
    did = f"did you mean '{hint[0]}'? " if hint else ""
    return f"unknown key ({did}allowed: {', '.join(allowed)})"


def _fields_at(loc: Loc) -> list[str]:
    """Field names of the model at pydantic `loc` (union tags included), or []."""
    t: Any = Spec
    for comp in loc:
        t = _step(_unwrap(t), comp)
        if t is None:
            return []
    t = _unwrap(t)
    return list(t.model_fields) if isinstance(t, type) and issubclass(t, BaseModel) else []


def _unwrap(t: Any) -> Any:
    while True:
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t
            t = args[0]
        else:
            return t


def _step(t: Any, comp: str | int) -> Any:
    if isinstance(t, type) and issubclass(t, BaseModel):
        f = t.model_fields.get(str(comp))
        return f.annotation if f else None
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is list and isinstance(comp, int):
        return args[0]
    if origin is dict:
        return args[1]
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if getattr(_unwrap(a), "__name__", None) == comp:
                return a
    return None
