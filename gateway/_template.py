"""HttpRule path templates (google/api/http.proto), compiled once, matched per request.

A bad template must stop the edge at startup, not fail a request, so `PathTemplate.parse`
validates the whole grammar and precomputes what `match` needs: the literal positions,
the positions a `*` must fill, and where each variable's value comes from. Matching is
then a length check, a few string compares and, for bound segments, percent-decoding.

Grammar:

    Template  = "/" Segments [ Verb ] ;
    Segments  = Segment { "/" Segment } ;
    Segment   = "*" | "**" | LITERAL | Variable ;
    Variable  = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb      = ":" LITERAL ;
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["BadPathValue", "PathTemplate", "TemplateError", "Variable"]

# RFC 3986 pchar without "%" (literals compare with the raw path, so an escape in a
# template could only ever match one spelling of it) and without "*" (a wildcard).
_LITERAL_CHARS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()+,;=:@")
# The router takes a request's verb after the last ":", so a verb never holds one.
_VERB_CHARS = _LITERAL_CHARS - {":"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX = frozenset(string.hexdigits)

# Specificity ranks of a segment: higher is more specific. The end of a template ranks
# above "**", so "/v1/a" beats "/v1/a/**" on "/v1/a".
_DOUBLE_STAR, _END, _STAR, _LITERAL = 0, 1, 2, 3


class TemplateError(ValueError):
    """A path template that does not follow the HttpRule grammar."""

    def __init__(self, reason: str, template: str) -> None:
        super().__init__(f"{reason} in {template}")
        self.reason = reason
        self.template = template


class BadPathValue(ValueError):
    """A request path segment bound to a variable that cannot be decoded."""

    def __init__(self, reason: str, segment: str) -> None:
        super().__init__(f"{reason} in path segment {segment!r}")
        self.reason = reason
        self.segment = segment


@dataclass(frozen=True)
class Variable:
    """One `{field.path=pattern}` of a template."""

    field_path: tuple[str, ...]
    pattern: str
    """The segments the variable matches, as written: "*" for a bare `{x}`."""


@dataclass(frozen=True)
class _Capture:
    """Where a variable's value lies in the request's segments, and how to decode it."""

    key: str
    start: int
    stop: int | None  # None: to the end of the path (the variable holds "**")
    multi: bool  # more than one segment in its pattern: "%2F" stays escaped

    def value(self, segments: Sequence[str]) -> str:
        if not self.multi:
            return _decode(segments[self.start], keep_slash=False)
        return "/".join(_decode(s, keep_slash=True) for s in segments[self.start : self.stop])


@dataclass(frozen=True)
class PathTemplate:
    """A parsed path template; build one with `PathTemplate.parse`."""

    text: str
    verb: str = field(init=False, compare=False)
    """The custom verb after ":", "" if none."""
    variables: tuple[Variable, ...] = field(init=False, compare=False)
    segments: tuple[str, ...] = field(init=False, compare=False)
    """Every segment with variables spelled out, e.g. ("v1", "shelves", "*") for
    "/v1/{name=shelves/*}:cancel"; "*" and "**" are wildcards, the rest literals."""
    parts: tuple[str | Variable, ...] = field(init=False, compare=False)
    """The segments as written, a variable as one part: ("v1", Variable(("name",),
    "shelves/*")) for "/v1/{name=shelves/*}:cancel"."""
    _literals: tuple[tuple[int, str], ...] = field(init=False, compare=False, repr=False)
    _stars: tuple[int, ...] = field(init=False, compare=False, repr=False)
    _captures: tuple[_Capture, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        segments, verb, variables, captures, parts = _parse(self.text)
        literals = tuple((i, s) for i, s in enumerate(segments) if s not in ("*", "**"))
        stars = tuple(i for i, s in enumerate(segments) if s == "*")
        # Frozen: the compiled form is set once, here.
        for name, value in (
            ("verb", verb),
            ("variables", variables),
            ("segments", segments),
            ("parts", parts),
            ("_literals", literals),
            ("_stars", stars),
            ("_captures", captures),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Parse and compile a template.

        Raises:
            TemplateError: `text` does not follow the grammar.
        """
        return cls(text)

    @property
    def specificity(self) -> tuple[tuple[int, ...], bool]:
        """A sort key, greater for a more specific template: segment by segment a
        literal beats "*", which beats "**"; then a template with a verb beats one
        without."""
        ranks = tuple(_rank(s) for s in self.segments)
        return (*ranks, _END), bool(self.verb)

    def match(self, segments: Sequence[str], verb: str) -> dict[str, str] | None:
        """The decoded variables ("a.b" -> value) if the request matches, else None.

        Args:
            segments: the path split on "/", still percent-encoded, verb removed.
            verb: the request's custom verb, "" if none.

        Raises:
            BadPathValue: the path matches but a variable's value is malformed.
        """
        if verb != self.verb or not self._fits(segments):
            return None
        return {capture.key: capture.value(segments) for capture in self._captures}

    def _fits(self, segments: Sequence[str]) -> bool:
        count, fixed = len(segments), len(self.segments)
        if self.segments and self.segments[-1] == "**":
            if count < fixed - 1:
                return False
        elif count != fixed:
            return False
        for i, literal in self._literals:
            if segments[i] != literal:
                return False
        # An empty segment ("/v1//x") fills only "**".
        return all(segments[i] for i in self._stars)


def _rank(segment: str) -> int:
    if segment == "**":
        return _DOUBLE_STAR
    return _STAR if segment == "*" else _LITERAL


def _decode(segment: str, *, keep_slash: bool) -> str:
    """Percent-decode one raw segment; with `keep_slash`, "%2F" stays as written."""
    if "%" not in segment:
        return segment
    head, *escaped = segment.split("%")
    try:
        out = bytearray(head.encode())
        for piece in escaped:
            code = piece[:2]
            if len(code) != 2 or not _HEX.issuperset(code):
                raise BadPathValue("malformed percent-encoding", segment)
            byte = int(code, 16)
            if keep_slash and byte == 0x2F:
                out += f"%{code}".encode()
            else:
                out.append(byte)
            out += piece[2:].encode()
        return out.decode()
    except UnicodeError:
        raise BadPathValue("invalid UTF-8 after percent-decoding", segment) from None


_Parsed = tuple[
    tuple[str, ...], str, tuple[Variable, ...], tuple[_Capture, ...], tuple[str | Variable, ...]
]


def _parse(text: str) -> _Parsed:
    if not text.startswith("/"):
        raise TemplateError("a template must start with '/'", text)
    pieces = _split_top(text)
    pieces[-1], verb = _split_verb(pieces[-1], text)
    segments: list[str] = []
    variables: list[Variable] = []
    captures: list[_Capture] = []
    parts: list[str | Variable] = []
    for piece in pieces:
        if piece.startswith("{"):
            variable, inner = _variable(piece, text)
            variables.append(variable)
            captures.append(_capture(variable, inner, len(segments)))
            segments.extend(inner)
            parts.append(variable)
        else:
            segments.append(_segment(piece, text))
            parts.append(segments[-1])
    _check_double_star(segments, text)
    _check_field_paths(variables, text)
    return tuple(segments), verb, tuple(variables), tuple(captures), tuple(parts)


def _split_top(text: str) -> list[str]:
    """Split on the "/" outside braces, checking that braces balance and never nest."""
    pieces, start, depth = [], 1, 0
    for i, char in enumerate(text):
        if char == "{":
            if depth:
                raise TemplateError("a variable may not contain another variable", text)
            depth = 1
        elif char == "}":
            if not depth:
                raise TemplateError(f"unmatched '}}' at offset {i}", text)
            depth = 0
        elif char == "/" and not depth and i:
            pieces.append(text[start:i])
            start = i + 1
    if depth:
        raise TemplateError("unclosed '{'", text)
    pieces.append(text[start:])
    return pieces


def _split_verb(last: str, text: str) -> tuple[str, str]:
    """Take the verb off the last segment: text after its last ":" outside braces."""
    after_variable = last.rfind("}") + 1
    colon = last.rfind(":", after_variable)
    if colon < 0:
        return last, ""
    verb = last[colon + 1 :]
    if not verb:
        raise TemplateError("empty verb", text)
    if not _VERB_CHARS.issuperset(verb):
        raise TemplateError(f"verb {verb!r} is not a literal", text)
    return last[:colon], verb


def _segment(piece: str, text: str) -> str:
    if not piece:
        raise TemplateError("empty segment", text)
    if piece in ("*", "**"):
        return piece
    if "{" in piece or "}" in piece:
        raise TemplateError(f"a variable must be a whole segment, not {piece!r}", text)
    if not _LITERAL_CHARS.issuperset(piece):
        raise TemplateError(f"segment {piece!r} is not a literal", text)
    return piece


def _variable(piece: str, text: str) -> tuple[Variable, list[str]]:
    if not piece.endswith("}"):
        raise TemplateError(f"a variable must be a whole segment, not {piece!r}", text)
    path, eq, pattern = piece[1:-1].partition("=")
    names = tuple(path.split("."))
    if not all(_IDENT.fullmatch(name) for name in names):
        raise TemplateError(f"bad field path {path!r}", text)
    if eq and not pattern:
        raise TemplateError(f"empty pattern for {path!r}", text)
    pattern = pattern or "*"
    inner = [_segment(s, text) for s in pattern.split("/")]
    return Variable(field_path=names, pattern=pattern), inner


def _capture(variable: Variable, inner: list[str], start: int) -> _Capture:
    multi = len(inner) > 1 or inner[0] == "**"
    stop = None if inner[-1] == "**" else start + len(inner)
    return _Capture(key=".".join(variable.field_path), start=start, stop=stop, multi=multi)


def _check_double_star(segments: list[str], text: str) -> None:
    if "**" in segments[:-1]:
        raise TemplateError("'**' must be the last segment", text)


def _check_field_paths(variables: list[Variable], text: str) -> None:
    """Each field at most once; "{a}" with "{a.b}" cannot hold either, as "a" would be
    both a string and a message."""
    seen: set[tuple[str, ...]] = set()
    for path in sorted(v.field_path for v in variables):
        name = ".".join(path)
        if path in seen:
            raise TemplateError(f"field path {name!r} is bound twice", text)
        for n in range(1, len(path)):
            if path[:n] in seen:
                raise TemplateError(f"field path {name!r} is inside {'.'.join(path[:n])!r}", text)
        seen.add(path)
