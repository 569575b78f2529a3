"""Request path -> route, over every compiled template of the edge.

Every request goes through here, so the templates are built into a trie of their
segments at startup: a lookup walks only the branches the path can take (a literal
child, a "*" child, "**" tails) instead of trying each template in turn. Templates
with a custom verb live in one trie per verb, since they match the path with the verb
taken off its last segment while the others match it whole (a `{id}` may hold ":").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway._template import PathTemplate

__all__ = ["MethodNotAllowed", "NoRoute", "RouteMatch", "Router"]

T = TypeVar("T")


class NoRoute(LookupError):
    """No template matches the path, whatever the HTTP method (404)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no route for {path}")
        self.path = path


class MethodNotAllowed(LookupError):
    """Templates match the path, but none for the request's method (405)."""

    def __init__(self, verb: str, path: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"{verb} not allowed for {path}; allowed: {', '.join(allowed)}")
        self.verb = verb
        self.path = path
        self.allowed = allowed
        """The methods that would match, sorted: the Allow header."""


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    """The route a request goes to, with its path variables decoded."""

    value: T
    variables: dict[str, str]
    """Field path ("a.b") -> decoded value."""
    template: PathTemplate


@dataclass(frozen=True)
class _Route(Generic[T]):
    value: T
    template: PathTemplate
    rank: tuple[tuple[tuple[int, ...], bool], int]
    """Greatest wins: the template's specificity, then the earlier declaration."""


@dataclass
class _Node(Generic[T]):
    """Templates sharing a prefix of segments; routes are keyed by HTTP method."""

    literals: dict[str, _Node[T]] = field(default_factory=dict)
    star: _Node[T] | None = None
    ends: dict[str, _Route[T]] = field(default_factory=dict)
    """Templates that end here."""
    tails: dict[str, _Route[T]] = field(default_factory=dict)
    """Templates whose "**" starts here."""

    def add(self, segments: Sequence[str], method: str, route: _Route[T]) -> None:
        node = self
        for segment in segments:
            if segment == "**":
                node.tails.setdefault(method, route)
                return
            node = node._child(segment)
        # An earlier template of the same shape and method shadows this one.
        node.ends.setdefault(method, route)

    def _child(self, segment: str) -> _Node[T]:
        if segment == "*":
            if self.star is None:
                self.star = _Node()
            return self.star
        return self.literals.setdefault(segment, _Node())

    def collect(self, segments: Sequence[str], at: int, out: list[dict[str, _Route[T]]]) -> None:
        """Append the route maps of every template that matches segments[at:]."""
        if self.tails:
            out.append(self.tails)
        if at == len(segments):
            if self.ends:
                out.append(self.ends)
            return
        segment = segments[at]
        child = self.literals.get(segment)
        if child is not None:
            child.collect(segments, at + 1, out)
        # An empty segment ("/v1//x") fills only "**".
        if self.star is not None and segment:
            self.star.collect(segments, at + 1, out)


class Router(Generic[T]):
    """Finds the route of a request among (HTTP method, path template, value) triples.

    Of the templates that match, the most specific wins (`PathTemplate.specificity`),
    then the one declared first.
    """

    def __init__(self, routes: Iterable[tuple[str, str, T]]) -> None:
        """Compile every template.

        Raises:
            TemplateError: a template is invalid.
            ValueError: a method is not upper case, or a (method, template) repeats.
        """
        self._plain: _Node[T] = _Node()
        self._by_verb: dict[str, _Node[T]] = {}
        seen: set[tuple[str, str]] = set()
        for order, (method, text, value) in enumerate(routes):
            _check_route(method, text, seen)
            template = PathTemplate.parse(text)
            route = _Route(value, template, (template.specificity, -order))
            self._trie(template.verb).add(template.segments, method, route)

    def match(self, verb: str, path: str) -> RouteMatch[T]:
        """The route for a request.

        Args:
            verb: the HTTP method.
            path: the raw path, still percent-encoded, without the query string.

        Raises:
            NoRoute: no template matches the path.
            MethodNotAllowed: templates match the path, none for this method.
            BadPathValue: the winning template's variables cannot be decoded.
        """
        if not path.startswith("/"):
            raise NoRoute(path)
        segments = path[1:].split("/")
        found: list[dict[str, _Route[T]]] = []
        self._plain.collect(segments, 0, found)
        stripped, custom = _split_verb(segments)
        if custom in self._by_verb:
            self._by_verb[custom].collect(stripped, 0, found)
        best = max((m[verb] for m in found if verb in m), key=_rank, default=None)
        if best is None:
            raise _miss(verb, path, found)
        template = best.template
        variables = template.match(stripped if template.verb else segments, template.verb)
        assert variables is not None, "the trie and the template disagree"
        return RouteMatch(value=best.value, variables=variables, template=template)

    def _trie(self, verb: str) -> _Node[T]:
        if not verb:
            return self._plain
        return self._by_verb.setdefault(verb, _Node())


def _check_route(method: str, text: str, seen: set[tuple[str, str]]) -> None:
    if not method or method != method.upper():
        raise ValueError(f"HTTP method {method!r} of {text} must be upper case")
    if (method, text) in seen:
        raise ValueError(f"{method} {text} is declared twice")
    seen.add((method, text))


def _split_verb(segments: list[str]) -> tuple[list[str], str]:
    """The segments without the last one's ":verb" suffix, and that verb ("" if none)."""
    head, colon, verb = segments[-1].rpartition(":")
    if not colon or not verb:
        return segments, ""
    return [*segments[:-1], head], verb


def _rank(route: _Route[T]) -> tuple[tuple[tuple[int, ...], bool], int]:
    return route.rank


def _miss(verb: str, path: str, found: list[dict[str, _Route[T]]]) -> LookupError:
    allowed = sorted({method for routes in found for method in routes})
    if allowed:
        return MethodNotAllowed(verb, path, tuple(allowed))
    return NoRoute(path)
