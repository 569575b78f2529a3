"""gateway._router.Router: verbs, specificity, 404 against 405, and the trie against a
brute-force scan of every template."""

from __future__ import annotations

import random

import pytest

from gateway._router import MethodNotAllowed, NoRoute, RouteMatch, Router
from gateway._template import BadPathValue, PathTemplate, TemplateError

# A bookshop-like surface; each value names its route.
_ROUTES = [
    ("GET", "/v1/shelves", "ListShelves"),
    ("POST", "/v1/shelves", "CreateShelf"),
    ("GET", "/v1/{name=shelves/*}", "GetShelf"),
    ("DELETE", "/v1/{name=shelves/*}", "DeleteShelf"),
    ("GET", "/v1/{parent=shelves/*}/books", "ListBooks"),
    ("GET", "/v1/{name=shelves/*/books/*}", "GetBook"),
    ("PATCH", "/v1/{book.name=shelves/*/books/*}", "UpdateBook"),
    ("POST", "/v1/{name=shelves/*/books/*}:cancel", "CancelBook"),
    ("GET", "/v1/products/{id}", "GetProduct"),
    ("POST", "/v1/products:batchGet", "BatchGetProducts"),
    ("GET", "/v1/products:search", "SearchProducts"),
    ("GET", "/v1/files/{path=**}", "ReadFile"),
    ("GET", "/v1/files/{path=**}:download", "DownloadFile"),
    ("PUT", "/v1/files/{path=**}", "WriteFile"),
    ("HEAD", "/v1/ping", "Ping"),
    ("PURGE", "/v1/cache/{key}", "PurgeCache"),
]
_TEMPLATES = {value: text for _, text, value in _ROUTES}


@pytest.fixture(scope="module")
def router() -> Router[str]:
    return Router(_ROUTES)


@pytest.mark.parametrize(
    ("verb", "path", "value", "variables"),
    [
        ("GET", "/v1/shelves", "ListShelves", {}),
        ("POST", "/v1/shelves", "CreateShelf", {}),
        ("GET", "/v1/shelves/1", "GetShelf", {"name": "shelves/1"}),
        ("DELETE", "/v1/shelves/1", "DeleteShelf", {"name": "shelves/1"}),
        ("GET", "/v1/shelves/1/books", "ListBooks", {"parent": "shelves/1"}),
        ("GET", "/v1/shelves/1/books/2", "GetBook", {"name": "shelves/1/books/2"}),
        ("PATCH", "/v1/shelves/1/books/2", "UpdateBook", {"book.name": "shelves/1/books/2"}),
        ("POST", "/v1/shelves/1/books/2:cancel", "CancelBook", {"name": "shelves/1/books/2"}),
        (
            "POST",
            "/v1/shelves/1/books/a%2Fb:cancel",
            "CancelBook",
            {"name": "shelves/1/books/a%2Fb"},
        ),
        # No GET route has the verb, so GET's "*" takes ":cancel" as part of the id.
        ("GET", "/v1/shelves/1/books/2:cancel", "GetBook", {"name": "shelves/1/books/2:cancel"}),
        # The verb route, and "{id}" that holds a ":" of its own.
        ("POST", "/v1/products:batchGet", "BatchGetProducts", {}),
        ("GET", "/v1/products:search", "SearchProducts", {}),
        ("GET", "/v1/products/a:b", "GetProduct", {"id": "a:b"}),
        ("GET", "/v1/products/a:batchGet", "GetProduct", {"id": "a:batchGet"}),
        ("GET", "/v1/products/x%3Asearch", "GetProduct", {"id": "x:search"}),
        ("GET", "/v1/products/a%2Fb", "GetProduct", {"id": "a/b"}),
        ("GET", "/v1/products/a%20b+c", "GetProduct", {"id": "a b+c"}),
        # "**" with zero, one and many segments, with and without a verb.
        ("GET", "/v1/files", "ReadFile", {"path": ""}),
        ("GET", "/v1/files/a", "ReadFile", {"path": "a"}),
        ("GET", "/v1/files/a/b/c.txt", "ReadFile", {"path": "a/b/c.txt"}),
        ("GET", "/v1/files/a%2Fb/c", "ReadFile", {"path": "a%2Fb/c"}),
        ("GET", "/v1/files/a/b:download", "DownloadFile", {"path": "a/b"}),
        ("GET", "/v1/files:download", "DownloadFile", {"path": ""}),
        ("GET", "/v1/files/a:b:download", "DownloadFile", {"path": "a:b"}),
        ("GET", "/v1/files/a/b:view", "ReadFile", {"path": "a/b:view"}),
        ("GET", "/v1/files//x/", "ReadFile", {"path": "/x/"}),
        ("PUT", "/v1/files/a/b:download", "WriteFile", {"path": "a/b:download"}),
        ("HEAD", "/v1/ping", "Ping", {}),
        ("PURGE", "/v1/cache/k", "PurgeCache", {"key": "k"}),
    ],
)
def test_routes(
    router: Router[str], verb: str, path: str, value: str, variables: dict[str, str]
) -> None:
    found = router.match(verb, path)

    assert (found.value, found.variables) == (value, variables)
    assert isinstance(found, RouteMatch)
    assert found.template == PathTemplate.parse(_TEMPLATES[value])


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v2/shelves",
        "/v1",
        "/v1/shelves/1/books/2/pages",
        "/v1/racks/1",
        "/v1/shelves/",  # empty segment: not a "*"
        "/v1//books",
        "/v1/shelves//books",
        "/v1/products",
        "/v1/products/",
        "/v1/products:unknownVerb",
        "/v1/products/1/2",
        "/v1/shelve%73",  # literals compare raw
        "/V1/shelves",
        "",
        "v1/shelves",
        "*",
    ],
)
def test_no_template_matches_whatever_the_method(router: Router[str], path: str) -> None:
    for verb in ("GET", "POST", "PURGE"):
        with pytest.raises(NoRoute) as caught:
            router.match(verb, path)
        assert caught.value.path == path


@pytest.mark.parametrize(
    ("verb", "path", "allowed"),
    [
        ("PUT", "/v1/shelves", ("GET", "POST")),
        ("POST", "/v1/shelves/1", ("DELETE", "GET")),
        ("DELETE", "/v1/shelves/1/books/2", ("GET", "PATCH")),
        ("GET", "/v1/products:batchGet", ("POST",)),
        ("POST", "/v1/products/7", ("GET",)),
        ("DELETE", "/v1/files/a/b", ("GET", "PUT")),
        ("POST", "/v1/files/a/b:download", ("GET", "PUT")),
        # HEAD is not special: it is not GET, nor is GET HEAD.
        ("GET", "/v1/ping", ("HEAD",)),
        ("HEAD", "/v1/shelves", ("GET", "POST")),
        # Methods compare exactly.
        ("get", "/v1/shelves", ("GET", "POST")),
    ],
)
def test_other_methods_match(
    router: Router[str], verb: str, path: str, allowed: tuple[str, ...]
) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        router.match(verb, path)

    assert caught.value.allowed == allowed
    assert (caught.value.verb, caught.value.path) == (verb, path)


def test_not_found_and_not_allowed_are_lookup_errors(router: Router[str]) -> None:
    with pytest.raises(LookupError):
        router.match("GET", "/nope")
    with pytest.raises(LookupError):
        router.match("PUT", "/v1/shelves")


@pytest.mark.parametrize(
    ("path", "segment"),
    [
        ("/v1/products/%zz", "%zz"),
        ("/v1/products/a%4", "a%4"),
        ("/v1/products/%FF", "%FF"),
        ("/v1/shelves/%C3", "%C3"),
        ("/v1/files/ok/bad%2", "bad%2"),
        ("/v1/files/bad%g1:download", "bad%g1"),
    ],
)
def test_malformed_values_raise(router: Router[str], path: str, segment: str) -> None:
    with pytest.raises(BadPathValue) as caught:
        router.match("GET", path)

    assert caught.value.segment == segment


def test_a_malformed_value_in_an_unmatched_route_is_no_error(router: Router[str]) -> None:
    with pytest.raises(NoRoute):
        router.match("GET", "/v1/racks/%zz")


@pytest.mark.parametrize(
    ("routes", "path", "winner"),
    [
        # Literal beats "*" beats "**", whatever the declaration order.
        (["/v1/{id}", "/v1/a", "/v1/**"], "/v1/a", "/v1/a"),
        (["/v1/**", "/v1/{id}", "/v1/a"], "/v1/b", "/v1/{id}"),
        (["/v1/{id}", "/v1/**"], "/v1/b/c", "/v1/**"),
        (["/v1/{id=a}", "/v1/{id}"], "/v1/a", "/v1/{id=a}"),
        # Segment by segment: the first difference decides.
        (["/v1/*/a", "/v1/a/*"], "/v1/a/a", "/v1/a/*"),
        (["/v1/*/b", "/v1/a/**"], "/v1/a/b", "/v1/a/**"),
        (["/v1/**", "/v1/*/*"], "/v1/a/b", "/v1/*/*"),
        # The end of a template beats a "**" that matches nothing.
        (["/v1/a/**", "/v1/a"], "/v1/a", "/v1/a"),
        (["/v1/*/**", "/v1/*"], "/v1/a", "/v1/*"),
        # A verb beats none, once the segments tie.
        (["/v1/{id}", "/v1/{id}:cancel"], "/v1/a:cancel", "/v1/{id}:cancel"),
        (["/v1/{path=**}", "/v1/{path=**}:download"], "/v1/a/b:download", "/v1/{path=**}:download"),
        # ... but segments come first: "products" is a literal, "{id}" not.
        (["/v1/{id}:batchGet", "/v1/products"], "/v1/products:batchGet", "/v1/{id}:batchGet"),
        (["/v1/products:batchGet", "/v1/{id}"], "/v1/products:batchGet", "/v1/products:batchGet"),
        (
            ["/v1/*:batchGet", "/v1/{id=products:batchGet}"],
            "/v1/products:batchGet",
            "/v1/{id=products:batchGet}",
        ),
        # Then declaration order.
        (["/v1/{a}", "/v1/{b}"], "/v1/x", "/v1/{a}"),
        (["/v1/{b}", "/v1/{a}"], "/v1/x", "/v1/{b}"),
        (["/v1/{a}", "/v1/*"], "/v1/x", "/v1/{a}"),
        (["/v1/{p=**}", "/v1/**"], "/v1/x/y", "/v1/{p=**}"),
        (["/v1/{n=x/*}", "/v1/x/{m}"], "/v1/x/y", "/v1/{n=x/*}"),
        (["/v1/x/{m}", "/v1/{n=x/*}"], "/v1/x/y", "/v1/x/{m}"),
    ],
)
def test_the_most_specific_template_wins(routes: list[str], path: str, winner: str) -> None:
    router = Router(("GET", text, text) for text in routes)

    assert router.match("GET", path).value == winner


def test_specificity_is_per_method() -> None:
    router = Router([("GET", "/v1/a", "literal"), ("POST", "/v1/{id}", "variable")])

    assert router.match("POST", "/v1/a").variables == {"id": "a"}
    assert router.match("GET", "/v1/a").value == "literal"


def test_a_more_specific_route_with_a_malformed_value_still_wins() -> None:
    router = Router([("GET", "/v1/**", "any"), ("GET", "/v1/{id}", "one")])

    with pytest.raises(BadPathValue):
        router.match("GET", "/v1/%zz")


def test_values_may_be_anything() -> None:
    handler = object()
    router: Router[object] = Router([("GET", "/x", handler)])

    assert router.match("GET", "/x").value is handler


def test_an_empty_router_finds_nothing() -> None:
    with pytest.raises(NoRoute):
        Router[str]([]).match("GET", "/")


def test_routes_may_be_an_iterator() -> None:
    router = Router(iter([("GET", "/a", 1), ("GET", "/b", 2)]))

    assert [router.match("GET", p).value for p in ("/a", "/b")] == [1, 2]


@pytest.mark.parametrize(
    "routes",
    [
        [("GET", "/v1/{id}", 1), ("GET", "/v1/{id}", 2)],
        [("GET", "/v1/x:y", 1), ("POST", "/v1/x:y", 2), ("GET", "/v1/x:y", 3)],
    ],
)
def test_an_exact_duplicate_is_rejected(routes: list[tuple[str, str, int]]) -> None:
    with pytest.raises(ValueError, match="declared twice") as caught:
        Router(routes)

    assert not isinstance(caught.value, TemplateError)


def test_same_template_under_other_methods_or_spellings_is_no_duplicate() -> None:
    router = Router([("GET", "/v1/{id}", 1), ("POST", "/v1/{id}", 2), ("GET", "/v1/{id=*}", 3)])

    assert router.match("POST", "/v1/7").value == 2
    assert router.match("GET", "/v1/7").value == 1


@pytest.mark.parametrize("verb", ["get", "Post", ""])
def test_methods_must_be_upper_case(verb: str) -> None:
    with pytest.raises(ValueError, match="upper case"):
        Router([(verb, "/v1/x", 1)])


@pytest.mark.parametrize("text", ["v1/x", "/v1/{a=**}/b", "/v1//x", "/v1/{a}/{a}", "/v1/x:"])
def test_a_bad_template_is_rejected_at_construction(text: str) -> None:
    with pytest.raises(TemplateError) as caught:
        Router([("GET", "/ok", 0), ("GET", text, 1)])

    assert caught.value.template == text


def _reference(
    routes: list[tuple[str, PathTemplate, int]], verb: str, path: str
) -> int | tuple[str, ...] | None:
    """What the router must answer (a value, the allowed methods, or None for 404),
    found by trying every template in turn."""
    segments = path[1:].split("/")
    head, _, custom = segments[-1].rpartition(":")
    stripped = [*segments[:-1], head]
    winners: list[tuple[tuple[tuple[tuple[int, ...], bool], int], int]] = []
    methods: set[str] = set()
    for order, (method, template, value) in enumerate(routes):
        candidate = stripped if template.verb else segments
        if template.match(candidate, custom if template.verb else "") is None:
            continue
        methods.add(method)
        if method == verb:
            winners.append(((template.specificity, -order), value))
    if winners:
        return max(winners)[1]
    return tuple(sorted(methods)) or None


def _random_template(rng: random.Random) -> str:
    parts = [rng.choice(["a", "b", "*", "{x}"]) for _ in range(rng.randint(0, 3))]
    parts = [f"{{x{i}}}" if part == "{x}" else part for i, part in enumerate(parts)]
    if rng.random() < 0.3:
        parts.append(rng.choice(["**", "{rest=**}"]))
    text = "/" + "/".join(["v1", *parts])
    return text + rng.choice(["", "", ":go", ":stop"])


def _random_path(rng: random.Random) -> str:
    parts = [rng.choice(["a", "b", "c", "", "a:go", "b:stop"]) for _ in range(rng.randint(0, 5))]
    return "/" + "/".join([rng.choice(["v1", "v1", "v2"]), *parts])


def test_the_trie_agrees_with_trying_every_template() -> None:
    rng = random.Random(20240611)
    routes: list[tuple[str, str, int]] = []
    seen: set[tuple[str, str]] = set()
    while len(routes) < 300:
        key = (rng.choice(["GET", "POST", "DELETE"]), _random_template(rng))
        if key not in seen:
            seen.add(key)
            routes.append((*key, len(routes)))
    router = Router(routes)
    parsed = [(method, PathTemplate.parse(text), value) for method, text, value in routes]
    outcomes: set[str] = set()

    for _ in range(3000):
        verb, path = rng.choice(["GET", "POST", "PUT"]), _random_path(rng)
        expected = _reference(parsed, verb, path)
        try:
            got: int | tuple[str, ...] | None = router.match(verb, path).value
        except MethodNotAllowed as error:
            got = error.allowed
        except NoRoute:
            got = None
        assert got == expected, (verb, path)
        outcomes.add(type(expected).__name__)

    # Every kind of answer came up: a route, a 405 and a 404.
    assert outcomes == {"int", "tuple", "NoneType"}
