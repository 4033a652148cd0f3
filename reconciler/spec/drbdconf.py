"""A tolerant reader of the drbd.conf subset `reconciler import` needs (DRBD 8.4 syntax).

Tokens are words, "quoted strings", `{`, `}`, `;` and `#` comments; statements are
`words... ;` or `words... { statements }`.  `include` globs are resolved relative to the
including file.  From `resource NAME { on HOST { device; address; } ... }` sections we take
the resource names, devices, host names and host addresses; everything else is skipped.
"""

from __future__ import annotations

import glob
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_INCLUDE_DEPTH = 8
_SPECIAL = "{};"
_FAMILIES = ("ipv4", "ipv6", "ssocks", "sdp", "sci")


class DrbdConfError(ValueError):
    """A problem at FILE:LINE of a drbd.conf; `str()` is one line."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}" if line else f"{file}: {reason}")


@dataclass(frozen=True)
class Token:
    text: str
    line: int
    quoted: bool = False


@dataclass
class Stmt:
    """`words...;` (body None) or `words... { body }`; `line` is where it starts."""

    words: list[str]
    file: str
    line: int
    body: list[Stmt] | None = None


@dataclass
class Host:
    name: str
    address: str  # the IP address, without port or family
    device: str | None
    line: int


@dataclass
class Resource:
    name: str
    device: str
    hosts: list[Host] = field(default_factory=list)


def tokenize(text: str, file: str) -> list[Token]:
    """Split drbd.conf text into tokens; `#` starts a comment outside quotes."""
    out: list[Token] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif c in _SPECIAL:
            out.append(Token(c, line))
            i += 1
        elif c == '"':
            i, word = _quoted(text, i, file, line)
            out.append(Token(word, line, quoted=True))
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL + '"#':
                j += 1
            out.append(Token(text[i:j], line))
            i = j
    return out


def _quoted(text: str, i: int, file: str, line: int) -> tuple[int, str]:
    """(index past the closing quote, the unescaped content) of the string at text[i]."""
    chars: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == '"':
            return j + 1, "".join(chars)
        if c == "\n":
            break
        if c == "\\" and j + 1 < len(text) and text[j + 1] != "\n":
            j += 1
            c = text[j]
        chars.append(c)
        j += 1
    raise DrbdConfError(file, line, "unterminated quoted string")


def parse(text: str, file: str) -> list[Stmt]:
    """The statements of one drbd.conf text (includes not followed)."""
    tokens = tokenize(text, file)
    stmts, _ = _block(tokens, 0, file, None)
    return stmts


def _block(tokens: list[Token], pos: int, file: str, opened: Token | None) -> tuple[list[Stmt], int]:
    out: list[Stmt] = []
    words: list[Token] = []
    while pos < len(tokens):
        t = tokens[pos]
        pos += 1
        if t.quoted or t.text not in _SPECIAL:
            words.append(t)
        elif t.text == ";":
            if words:  # a stray ';' (after a '}', say) is harmless
                out.append(Stmt([w.text for w in words], file, words[0].line))
            words = []
        elif t.text == "{":
            if not words:
                raise DrbdConfError(file, t.line, "'{' without a section name before it")
            body, pos = _block(tokens, pos, file, t)
            out.append(Stmt([w.text for w in words], file, words[0].line, body))
            words = []
        else:  # '}'
            if opened is None:
                raise DrbdConfError(file, t.line, "'}' without a matching '{'")
            if words:
                raise DrbdConfError(file, words[-1].line, f"missing ';' after {' '.join(w.text for w in words)!r}")
            return out, pos
    if words:
        raise DrbdConfError(file, words[-1].line, f"missing ';' after {' '.join(w.text for w in words)!r}")
    if opened is not None:
        raise DrbdConfError(file, opened.line, "this '{' is never closed")
    return out, pos


def load(path: str, read: Callable[[str], str] | None = None, depth: int = 0) -> list[Stmt]:
    """The statements of the drbd.conf at `path` with its `include`s spliced in, in order."""
    read = read or _read_text
    try:
        text = read(path)
    except OSError as e:
        raise DrbdConfError(path, 0, f"cannot read: {e.strerror or e}") from None
    out: list[Stmt] = []
    for st in parse(text, path):
        if st.words[0] != "include" or st.body is not None:
            out.append(st)
            continue
        if len(st.words) != 2:
            raise DrbdConfError(path, st.line, "include takes one file pattern")
        if depth >= MAX_INCLUDE_DEPTH:
            raise DrbdConfError(path, st.line, f"includes nested deeper than {MAX_INCLUDE_DEPTH} (a loop?)")
        pattern = os.path.join(os.path.dirname(path), st.words[1])
        for inc in sorted(glob.glob(pattern)):  # a pattern matching nothing is no error, as for drbdadm
            out.extend(load(inc, read, depth + 1))
    return out


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(4 << 20)


def resources(stmts: list[Stmt]) -> list[Resource]:
    """The resources defined by top-level `resource NAME { ... }` sections."""
    out: list[Resource] = []
    for st in stmts:
        if st.words[0] == "resource" and st.body is not None:
            if len(st.words) != 2:
                raise DrbdConfError(st.file, st.line, "expected 'resource NAME {'")
            out.append(_resource(st))
    return out


def _resource(st: Stmt) -> Resource:
    name = st.words[1]
    assert st.body is not None
    device = _device_in(st.body, st)
    hosts: list[Host] = []
    for sub in st.body:
        head = sub.words[0]
        if head in ("floating", "stacked-on-top-of") and sub.body is not None:
            raise DrbdConfError(sub.file, sub.line, f"resource {name}: '{head}' sections are not supported; use 'on HOST'")
        if head == "on" and sub.body is not None:
            if len(sub.words) != 2:
                raise DrbdConfError(sub.file, sub.line, f"resource {name}: expected 'on HOST {{' with one host name")
            hosts.append(Host(sub.words[1], _address(sub, name), _device_in(sub.body, sub), sub.line))
    devices = {h.device for h in hosts if h.device is not None} | ({device} if device else set())
    if not hosts:
        raise DrbdConfError(st.file, st.line, f"resource {name} has no 'on HOST' sections")
    if len(devices) != 1:
        why = "no device" if not devices else f"different devices ({', '.join(sorted(devices))})"
        raise DrbdConfError(st.file, st.line, f"resource {name}: {why}; the spec needs one device for both nodes")
    return Resource(name, devices.pop(), hosts)


def _device_in(body: list[Stmt], owner: Stmt) -> str | None:
    """The device of a resource or `on` section: its own `device` line or its one volume's."""
    devices = [_device(st) for st in body if st.words[0] == "device" and st.body is None]
    volumes = [st for st in body if st.words[0] == "volume" and st.body is not None]
    if len(volumes) > 1:
        raise DrbdConfError(owner.file, owner.line, f"{' '.join(owner.words)}: several volumes are not supported")
    for vol in volumes:
        devices += [_device(st) for st in vol.body or [] if st.words[0] == "device" and st.body is None]
    if len(devices) > 1:
        raise DrbdConfError(owner.file, owner.line, f"{' '.join(owner.words)}: more than one device")
    return devices[0] if devices else None


def _device(st: Stmt) -> str:
    """`device /dev/drbd0;`, `device /dev/drbd0 minor 0;` or `device minor 0;`."""
    args = st.words[1:]
    if len(args) in (1, 3) and args[0].startswith("/") and (len(args) == 1 or args[1] == "minor"):
        return args[0]
    if len(args) == 2 and args[0] == "minor" and args[1].isdigit():
        return f"/dev/drbd{int(args[1])}"
    raise DrbdConfError(st.file, st.line, f"cannot read {' '.join(st.words)!r}")


def _address(on: Stmt, resource: str) -> str:
    """The IP of `address [FAMILY] IP:PORT;` ([IPv6]:PORT for IPv6) in an `on` section."""
    found = [st for st in on.body or [] if st.words[0] == "address" and st.body is None]
    if len(found) != 1:
        raise DrbdConfError(on.file, on.line, f"resource {resource}: 'on {on.words[1]}' needs exactly one address")
    st = found[0]
    args = st.words[1:]
    if len(args) == 2 and args[0] in _FAMILIES:
        args = args[1:]
    host, sep, port = args[0].rpartition(":") if len(args) == 1 else ("", "", "")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        if not sep or not port.isdigit():
            raise ValueError
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise DrbdConfError(st.file, st.line, f"cannot read {' '.join(st.words)!r} (expected IP:PORT)") from None
