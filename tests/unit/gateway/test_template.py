"""gateway._template: the HttpRule grammar, matching, decoding and specificity."""

from __future__ import annotations

import pytest

from gateway._template import BadPathValue, PathTemplate, TemplateError, Variable


def _split(path: str) -> list[str]:
    """A path as the router hands it over: split on "/" after the leading one."""
    return path[1:].split("/")


@pytest.mark.parametrize(
    ("text", "segments", "verb", "variables"),
    [
        ("/v1", ("v1",), "", ()),
        ("/v1/shelves", ("v1", "shelves"), "", ()),
        ("/*", ("*",), "", ()),
        ("/**", ("**",), "", ()),
        ("/v1/*/x", ("v1", "*", "x"), "", ()),
        ("/v1/**", ("v1", "**"), "", ()),
        ("/v1/{id}", ("v1", "*"), "", (Variable(("id",), "*"),)),
        ("/v1/{id=*}", ("v1", "*"), "", (Variable(("id",), "*"),)),
        ("/v1/{a.b_c.D9}", ("v1", "*"), "", (Variable(("a", "b_c", "D9"), "*"),)),
        ("/v1/{_x}", ("v1", "*"), "", (Variable(("_x",), "*"),)),
        ("/v1/{kind=fixed}", ("v1", "fixed"), "", (Variable(("kind",), "fixed"),)),
        (
            "/v1/{name=shelves/*/books/*}",
            ("v1", "shelves", "*", "books", "*"),
            "",
            (Variable(("name",), "shelves/*/books/*"),),
        ),
        ("/v1/{path=**}", ("v1", "**"), "", (Variable(("path",), "**"),)),
        ("/v1/{path=a/**}", ("v1", "a", "**"), "", (Variable(("path",), "a/**"),)),
        (
            "/v1/{shelf}/books/{book.id}",
            ("v1", "*", "books", "*"),
            "",
            (Variable(("shelf",), "*"), Variable(("book", "id"), "*")),
        ),
        ("/v1/products:batchGet", ("v1", "products"), "batchGet", ()),
        ("/v1:ping", ("v1",), "ping", ()),
        ("/v1/*:cancel", ("v1", "*"), "cancel", ()),
        ("/v1/{id}:cancel", ("v1", "*"), "cancel", (Variable(("id",), "*"),)),
        ("/v1/{path=**}:download", ("v1", "**"), "download", (Variable(("path",), "**"),)),
        # Only the last ":" of the last segment starts the verb.
        ("/v1/a:b/c", ("v1", "a:b", "c"), "", ()),
        ("/v1/a:b:c", ("v1", "a:b"), "c", ()),
        # A ":" inside a variable is part of its pattern.
        ("/v1/{x=a:b}", ("v1", "a:b"), "", (Variable(("x",), "a:b"),)),
        ("/v1/{x=a:b}:c", ("v1", "a:b"), "c", (Variable(("x",), "a:b"),)),
        ("/v1/a-b.c_d~e!$&'()+,;=@", ("v1", "a-b.c_d~e!$&'()+,;=@"), "", ()),
    ],
)
def test_parse_every_form(
    text: str, segments: tuple[str, ...], verb: str, variables: tuple[Variable, ...]
) -> None:
    template = PathTemplate.parse(text)

    assert template.text == text
    assert template.segments == segments
    assert template.verb == verb
    assert template.variables == variables


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must start with '/'"),
        ("v1/x", "must start with '/'"),
        ("/", "empty segment"),
        ("/v1/", "empty segment"),
        ("/v1//x", "empty segment"),
        ("//v1", "empty segment"),
        ("/v1/{a=x//y}", "empty segment"),
        ("/v1/{a=x/}", "empty segment"),
        ("/:verb", "empty segment"),
        ("/v1/{a", "unclosed '{'"),
        ("/v1/{a=*/b", "unclosed '{'"),
        ("/v1/a}", "unmatched '}'"),
        ("/v1/{a}}", "unmatched '}'"),
        ("/v1/{a={b}}", "may not contain another variable"),
        ("/v1/{a=x/{b}}", "may not contain another variable"),
        ("/v1/{}", "bad field path ''"),
        ("/v1/{=*}", "bad field path ''"),
        ("/v1/{1a}", "bad field path '1a'"),
        ("/v1/{a-b}", "bad field path 'a-b'"),
        ("/v1/{a.}", "bad field path 'a.'"),
        ("/v1/{.a}", "bad field path '.a'"),
        ("/v1/{a..b}", "bad field path 'a..b'"),
        ("/v1/{a b}", "bad field path 'a b'"),
        ("/v1/{a=}", "empty pattern"),
        ("/v1/x{a}", "must be a whole segment"),
        ("/v1/{a}x", "must be a whole segment"),
        ("/v1/a*", "not a literal"),
        ("/v1/***", "not a literal"),
        ("/v1/a%20b", "not a literal"),
        ("/v1/a?b", "not a literal"),
        ("/v1/caf\u00e9", "not a literal"),
        ("/v1/{a=b c}", "not a literal"),
        ("/**/x", "'**' must be the last segment"),
        ("/v1/**/**", "'**' must be the last segment"),
        ("/v1/{a=**}/b", "'**' must be the last segment"),
        ("/v1/{a=**/b}", "'**' must be the last segment"),
        ("/v1/{a}/{a}", "field path 'a' is bound twice"),
        ("/v1/{a.b}/x/{a.b=*}", "field path 'a.b' is bound twice"),
        ("/v1/{a}/{a.b}", "field path 'a.b' is inside 'a'"),
        ("/v1/{a.b.c}/{a}", "field path 'a.b.c' is inside 'a'"),
        ("/v1/a:", "empty verb"),
        ("/v1/{a}:", "empty verb"),
        ("/v1/a:*", "verb '*' is not a literal"),
        ("/v1/a:b c", "verb 'b c' is not a literal"),
    ],
)
def test_invalid_templates_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(TemplateError) as caught:
        PathTemplate.parse(text)

    assert caught.value.template == text
    assert reason in caught.value.reason
    assert str(caught.value) == f"{caught.value.reason} in {text}"


def test_template_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^'\*\*' must be the last segment in /v1/\{a=\*\*\}/b$"):
        PathTemplate.parse("/v1/{a=**}/b")


@pytest.mark.parametrize(
    ("text", "path", "verb", "expected"),
    [
        ("/v1/shelves", "/v1/shelves", "", {}),
        ("/v1/shelves", "/v1/shelf", "", None),
        ("/v1/shelves", "/v1/Shelves", "", None),
        ("/v1/shelves", "/v1/shelves/1", "", None),
        ("/v1/shelves", "/v1", "", None),
        ("/v1/*/x", "/v1/anything/x", "", {}),
        ("/v1/{id}", "/v1/42", "", {"id": "42"}),
        ("/v1/{id=*}", "/v1/42", "", {"id": "42"}),
        ("/v1/{id}", "/v1/42/43", "", None),
        ("/v1/{kind=fixed}", "/v1/fixed", "", {"kind": "fixed"}),
        ("/v1/{kind=fixed}", "/v1/other", "", None),
        ("/v1/{a.b}/{c}", "/v1/1/2", "", {"a.b": "1", "c": "2"}),
        (
            "/v1/{name=shelves/*/books/*}",
            "/v1/shelves/1/books/2",
            "",
            {"name": "shelves/1/books/2"},
        ),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1", "", None),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2/x", "", None),
        ("/v1/{name=shelves/*/books/*}", "/v1/racks/1/books/2", "", None),
        ("/v1/{name=shelves/*}/books", "/v1/shelves/7/books", "", {"name": "shelves/7"}),
        # "**": zero, one and many segments.
        ("/v1/{path=**}", "/v1", "", {"path": ""}),
        ("/v1/{path=**}", "/v1/a", "", {"path": "a"}),
        ("/v1/{path=**}", "/v1/a/b/c", "", {"path": "a/b/c"}),
        ("/v1/{path=a/**}", "/v1/a", "", {"path": "a"}),
        ("/v1/{path=a/**}", "/v1/a/b/c", "", {"path": "a/b/c"}),
        ("/v1/{path=a/**}", "/v1/b/c", "", None),
        ("/v1/**", "/v1/x/y", "", {}),
        ("/v1/**", "/v2/x", "", None),
        ("/**", "/", "", {}),
        ("/v1/{path=**}:download", "/v1/a/b", "download", {"path": "a/b"}),
        ("/v1/{path=**}:download", "/v1", "download", {"path": ""}),
        ("/v1/{path=**}:download", "/v1/a/b", "", None),
        ("/v1/{path=**}:download", "/v1/a/b", "upload", None),
        # Verbs must be equal, both ways.
        ("/v1/products:batchGet", "/v1/products", "batchGet", {}),
        ("/v1/products:batchGet", "/v1/products", "batchget", None),
        ("/v1/products:batchGet", "/v1/products", "", None),
        ("/v1/products", "/v1/products", "batchGet", None),
        ("/v1/{id}:cancel", "/v1/7", "cancel", {"id": "7"}),
        # The template does not split verbs itself: a ":" is part of the segment.
        ("/v1/{id}", "/v1/a:b", "", {"id": "a:b"}),
        ("/v1/a:b/{c}", "/v1/a:b/c", "", {"c": "c"}),
        # Empty segments fill only "**".
        ("/v1/*/x", "/v1//x", "", None),
        ("/v1/{id}", "/v1/", "", None),
        ("/v1/{id}/x", "/v1//x", "", None),
        ("/v1/x", "/v1/x/", "", None),
        ("/v1/{name=shelves/*}", "/v1/shelves/", "", None),
        ("/v1/{path=**}", "/v1/", "", {"path": ""}),
        ("/v1/{path=**}", "/v1//x/", "", {"path": "/x/"}),
        ("/v1/**", "/v1//", "", {}),
        # Literals compare raw: no decoding, no case folding of escapes.
        ("/v1/shelves", "/v1/shelve%73", "", None),
        ("/v1/a+b", "/v1/a+b", "", {}),
        ("/v1/a+b", "/v1/a%20b", "", None),
    ],
)
def test_match(text: str, path: str, verb: str, expected: dict[str, str] | None) -> None:
    assert PathTemplate.parse(text).match(_split(path), verb) == expected


def test_a_double_star_matches_no_segments_at_all() -> None:
    assert PathTemplate.parse("/{rest=**}").match([], "") == {"rest": ""}
    assert PathTemplate.parse("/*").match([], "") is None


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        # One segment: every escape decodes, "%2F" too.
        ("/v1/{id}", "/v1/a%2Fb", "a/b"),
        ("/v1/{id}", "/v1/a%2fb", "a/b"),
        ("/v1/{id}", "/v1/a%20b", "a b"),
        ("/v1/{id}", "/v1/a+b", "a+b"),
        ("/v1/{id}", "/v1/a%2Bb", "a+b"),
        ("/v1/{id}", "/v1/%3A%3a", "::"),
        ("/v1/{id}", "/v1/%25", "%"),
        ("/v1/{id}", "/v1/%252F", "%2F"),
        ("/v1/{id}", "/v1/caf%C3%A9", "caf\u00e9"),
        ("/v1/{id}", "/v1/%E2%82%AC%F0%9F%9B%92", "\u20ac\U0001f6d2"),
        ("/v1/{id}", "/v1/caf\u00e9", "caf\u00e9"),
        ("/v1/{id}:cancel", "/v1/a%2Fb", "a/b"),
        # Several segments: all but "%2F"/"%2f", which stays as written.
        ("/v1/{name=shelves/*}", "/v1/shelves/a%2Fb", "shelves/a%2Fb"),
        ("/v1/{name=shelves/*}", "/v1/shelves/a%2fb", "shelves/a%2fb"),
        ("/v1/{name=shelves/*}", "/v1/shelves/a%20b", "shelves/a b"),
        ("/v1/{name=shelves/*}", "/v1/shelves/a+b", "shelves/a+b"),
        ("/v1/{name=shelves/*}", "/v1/shelves/caf%C3%A9", "shelves/caf\u00e9"),
        ("/v1/{path=**}", "/v1/a%2Fb/c%20d", "a%2Fb/c d"),
        ("/v1/{path=**}", "/v1/%2F", "%2F"),
        ("/v1/{path=**}:download", "/v1/a%2Fb", "a%2Fb"),
    ],
)
def test_decoding(text: str, path: str, expected: str) -> None:
    template = PathTemplate.parse(text)
    (variable,) = template.variables

    assert template.match(_split(path), template.verb) == {variable.field_path[0]: expected}


@pytest.mark.parametrize(
    ("text", "path", "segment", "reason"),
    [
        ("/v1/{id}", "/v1/%zz", "%zz", "malformed percent-encoding"),
        ("/v1/{id}", "/v1/a%4", "a%4", "malformed percent-encoding"),
        ("/v1/{id}", "/v1/a%", "a%", "malformed percent-encoding"),
        ("/v1/{id}", "/v1/%%41", "%%41", "malformed percent-encoding"),
        ("/v1/{id}", "/v1/%4g", "%4g", "malformed percent-encoding"),
        ("/v1/{id}", "/v1/%C3", "%C3", "invalid UTF-8"),
        ("/v1/{id}", "/v1/%FF", "%FF", "invalid UTF-8"),
        ("/v1/{id}", "/v1/%C3%28", "%C3%28", "invalid UTF-8"),
        ("/v1/{name=shelves/*}", "/v1/shelves/x%zz", "x%zz", "malformed percent-encoding"),
        ("/v1/{path=**}", "/v1/ok/%2", "%2", "malformed percent-encoding"),
        ("/v1/{path=**}", "/v1/ok/%E2%82", "%E2%82", "invalid UTF-8"),
    ],
)
def test_malformed_values_raise(text: str, path: str, segment: str, reason: str) -> None:
    with pytest.raises(BadPathValue) as caught:
        PathTemplate.parse(text).match(_split(path), "")

    assert caught.value.segment == segment
    assert reason in caught.value.reason
    assert repr(segment) in str(caught.value)


def test_unbound_segments_are_not_decoded() -> None:
    assert PathTemplate.parse("/v1/*/{id}").match(["v1", "%zz", "7"], "") == {"id": "7"}


def test_a_mismatch_is_none_even_with_a_malformed_value() -> None:
    assert PathTemplate.parse("/v1/{id}/x").match(["v1", "%zz", "y"], "") is None


@pytest.mark.parametrize(
    ("more", "less"),
    [
        ("/v1/a", "/v1/*"),
        ("/v1/*", "/v1/**"),
        ("/v1/a", "/v1/**"),
        ("/v1/{id=a}", "/v1/{id}"),
        ("/v1/a/*", "/v1/*/a"),
        ("/v1/*/*", "/v1/**"),
        ("/v1/a", "/v1/a/**"),
        ("/v1/*", "/v1/*/**"),
        ("/v1/a/**", "/v1/*/b"),
        ("/v1/{id}:cancel", "/v1/{id}"),
        ("/v1/**:get", "/v1/**"),
        ("/v1/products:batchGet", "/v1/{id}"),
        ("/v1/{name=shelves/*}/books/{book}", "/v1/{name=shelves/*}/*/{book}"),
    ],
)
def test_specificity(more: str, less: str) -> None:
    assert PathTemplate.parse(more).specificity > PathTemplate.parse(less).specificity


def test_equal_shapes_have_equal_specificity() -> None:
    assert PathTemplate.parse("/v1/{a}").specificity == PathTemplate.parse("/v1/*").specificity


def test_templates_compare_by_text() -> None:
    assert PathTemplate.parse("/v1/{id}") == PathTemplate("/v1/{id}")
    assert PathTemplate.parse("/v1/{id}") != PathTemplate.parse("/v1/{id=*}")
    assert len({PathTemplate.parse("/v1/x"), PathTemplate.parse("/v1/x")}) == 1
