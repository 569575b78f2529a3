"""Every HttpRule binding form, through the real edge (HTTP server, router, transcoder,
error table) to a real gRPC server that echoes what it got: each case checks the
request message the service saw, or the status and body the client got."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway._descriptors import load_descriptor_set
from gateway._handler import Edge, EdgeOptions
from gateway._http import HttpServer
from gateway._openapi import openapi_document
from gateway._site import Site, SiteOptions
from tests.harness.echo import compile_protos, echo_server
from tests.harness.http import fetch


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_protos(tmp_path_factory.mktemp("protos"))


async def _edge_url(descriptor_set: Path, upstream: str, **options: Any) -> AsyncIterator[str]:
    surface = load_descriptor_set(descriptor_set)
    channel = grpc.aio.insecure_channel(upstream)
    edge = Edge(surface, lambda _: channel, options=EdgeOptions(**options))
    site = Site(edge, openapi_document(surface, title="t", version="1"), SiteOptions())
    server = HttpServer(site.handle)
    port = await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.close()
        await channel.close()


@pytest.fixture(scope="module")
async def upstream(descriptor_set: Path) -> AsyncIterator[str]:
    async with echo_server(descriptor_set) as echo:
        yield echo.address


@pytest.fixture(scope="module")
async def edge(descriptor_set: Path, upstream: str) -> AsyncIterator[str]:
    async for url in _edge_url(descriptor_set, upstream):
        yield url


@pytest.fixture(scope="module")
async def proto_names_edge(descriptor_set: Path, upstream: str) -> AsyncIterator[str]:
    async for url in _edge_url(descriptor_set, upstream, use_proto_names=True):
        yield url


SEARCH_QUERY = (
    "query=q&tag=a&tag=b&genres=GENRE_POETRY&genres=1&filter.genre=GENRE_FICTION"
    "&filter.minPages=10&filter.author.display_name=Zoe&offset=9007199254740993"
    "&maxResults=5&exact=true&score=1.5&ratio=0.25&cursor=AAEC"
    "&since=2024-01-02T03:04:05Z&within=1.5s&fields=title,author.displayName"
    "&limit=7&flag=false&note=hi&weight=2.5&ids=1&ids=2"
)
SEARCH_SEEN = {
    "query": "q",
    "tag": ["a", "b"],
    "genres": ["GENRE_POETRY", "GENRE_FICTION"],
    "filter": {"genre": "GENRE_FICTION", "minPages": 10, "author": {"displayName": "Zoe"}},
    "offset": "9007199254740993",
    "maxResults": "5",
    "exact": True,
    "score": 1.5,
    "ratio": 0.25,
    "cursor": "AAEC",
    "since": "2024-01-02T03:04:05Z",
    "within": "1.500s",
    "fields": "title,author.displayName",
    "limit": "7",
    "flag": False,
    "note": "hi",
    "weight": 2.5,
    "ids": ["1", "2"],
}

BINDINGS = [
    # (HTTP method, path and query, body, the request message the service saw)
    ("GET", "/v1/shelves/1/books/2", None, {"name": "shelves/1/books/2"}),
    (
        "GET",
        "/v1/shelves/1/books/2?includeAuthor=true",
        None,
        {"name": "shelves/1/books/2", "includeAuthor": True},
    ),
    (
        "GET",
        "/v1/shelves/1/books/2?include_author=1",
        None,
        {"name": "shelves/1/books/2", "includeAuthor": True},
    ),
    # a multi-segment variable keeps an escaped slash escaped; the rest is decoded
    ("GET", "/v1/shelves/1/books/a%2Fb%20c", None, {"name": "shelves/1/books/a%2Fb c"}),
    (
        "POST",
        "/v1/shelves/1/books/2:cancel",
        '{"reason": "lost"}',
        {"name": "shelves/1/books/2", "reason": "lost"},
    ),
    # PATCH with body: "book" and no update mask: the mask is the body's fields
    (
        "PATCH",
        "/v1/shelves/1/books/2",
        '{"title": "T", "author": {"displayName": "A"}, "labels": {"k": "v"}}',
        {
            "book": {
                "name": "shelves/1/books/2",
                "title": "T",
                "author": {"displayName": "A"},
                "labels": {"k": "v"},
            },
            "updateMask": "title,author.displayName,labels",
        },
    ),
    (
        "PATCH",
        "/v1/shelves/1/books/2?updateMask=title",
        '{"title": "T", "tags": ["x"]}',
        {"book": {"name": "shelves/1/books/2", "title": "T", "tags": ["x"]}, "updateMask": "title"},
    ),
    (
        "PUT",
        "/v1/shelves/s1/books/42?validateOnly=true",
        '{"title": "x", "pages": 300, "genre": 2, "published": "2020-05-06T07:08:09.5Z"}',
        {
            "shelf": "s1",
            "bookId": "42",
            "validateOnly": True,
            "book": {
                "title": "x",
                "pages": "300",
                "genre": "GENRE_POETRY",
                "published": "2020-05-06T07:08:09.500Z",
            },
        },
    ),
    (
        "DELETE",
        "/v1/shelves/s1/books/42?etag=abc",
        None,
        {"shelf": "s1", "bookId": "42", "etag": "abc"},
    ),
    ("GET", "/v1/files/a/b/c.txt", None, {"path": "a/b/c.txt"}),
    ("GET", "/v1/files", None, {}),
    ("GET", "/v1/volumes/v9/files/x/y.bin:download", None, {"path": "x/y.bin"}),
    ("GET", f"/v1/search?{SEARCH_QUERY}", None, SEARCH_SEEN),
    (
        "POST",
        "/v1/search",
        '{"query": "q", "filter": {"min_pages": 3}, "extra": {"a": [1, "b", null]}}',
        {"query": "q", "filter": {"minPages": 3}, "extra": {"a": [1, "b", None]}},
    ),
    ("SEARCH", "/v1/search?query=custom", None, {"query": "custom"}),
]


@pytest.mark.parametrize(("verb", "target", "body", "seen"), BINDINGS)
async def test_binding_fills_the_request(
    edge: str, verb: str, target: str, body: str | None, seen: dict[str, Any]
) -> None:
    answer = await fetch(edge + target, verb, body, {"content-type": "application/json"})
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["request"] == seen


async def test_response_body_answers_with_one_field(edge: str) -> None:
    answer = await fetch(f"{edge}/v1/shelves/s7")
    assert answer.status == 200
    assert answer.json() == {"shelf": "s7"}


async def test_proto_names_are_kept_when_asked(proto_names_edge: str) -> None:
    answer = await fetch(f"{proto_names_edge}/v1/shelves/s1/books/42?etag=e", "DELETE")
    assert answer.status == 200
    assert answer.json()["request"] == {"shelf": "s1", "book_id": "42", "etag": "e"}


async def test_both_names_are_accepted_in_and_camel_case_comes_out(edge: str) -> None:
    answer = await fetch(f"{edge}/v1/search", "POST", '{"max_results": "3", "minPages": 1}')
    assert answer.status == 400  # minPages is not a field of SearchRequest itself
    answer = await fetch(f"{edge}/v1/search", "POST", '{"max_results": "3", "note": "n"}')
    assert answer.json()["request"] == {"maxResults": "3", "note": "n"}


BAD_REQUESTS = [
    # (method, target, body, status, gRPC code, a word the message must have, field)
    ("GET", "/v1/nowhere", None, 404, 5, "no route", None),
    ("DELETE", "/v1/search", None, 405, 12, "DELETE", None),
    ("POST", "/v1/search", "{not json", 400, 3, "malformed JSON", None),
    ("POST", "/v1/search", '{"nope": 1}', 400, 3, "nope", "nope"),
    ("POST", "/v1/search", '{"filter": {"nope": 1}}', 400, 3, "nope", "filter.nope"),
    ("POST", "/v1/search", '{"offset": "x1"}', 400, 3, "offset", None),
    ("POST", "/v1/search", "[1, 2]", 400, 3, "", None),
    ("GET", "/v1/search?nope=1", None, 400, 3, "nope", "nope"),
    ("GET", "/v1/search?exact=maybe", None, 400, 3, "bool", "exact"),
    ("GET", "/v1/search?offset=1&offset=2", None, 400, 3, "more than once", "offset"),
    ("GET", "/v1/search?genres=GENRE_NONE", None, 400, 3, "", None),
    ("GET", "/v1/search?filter=1", None, 400, 3, "filter", "filter"),
    ("GET", "/v1/search?since=yesterday", None, 400, 3, "", None),
    ("GET", "/v1/shelves/1/books/%zz", None, 400, 3, "%zz", None),
    ("GET", "/v1/shelves/1/books/2", '{"x": 1}', 400, 3, "no body", None),
    ("PUT", "/v1/shelves/s1/books/notanumber", "{}", 400, 3, "not an integer", "book_id"),
    ("POST", "/v1/search?query=x", '{"query": "y"}', 400, 3, "body", "query"),
]


@pytest.mark.parametrize(
    ("verb", "target", "body", "status", "code", "word", "field"), BAD_REQUESTS
)
async def test_bad_requests_get_a_status_and_an_error_body(
    edge: str,
    verb: str,
    target: str,
    body: str | None,
    status: int,
    code: int,
    word: str,
    field: str | None,
) -> None:
    answer = await fetch(edge + target, verb, body)
    assert answer.status == status, answer.body
    error = answer.json()
    assert error["code"] == code
    assert word in error["message"]
    assert isinstance(error["details"], list)
    if field is not None:
        violations = [
            v
            for d in error["details"]
            if d["@type"].endswith("google.rpc.BadRequest")
            for v in d["fieldViolations"]
        ]
        assert [v["field"] for v in violations] == [field]


async def test_405_says_which_methods_the_path_takes(edge: str) -> None:
    answer = await fetch(f"{edge}/v1/search", "DELETE")
    assert answer.headers["allow"] == "GET, POST, SEARCH"


# grpc-gateway's table (runtime/errors.go HTTPStatusFromCode)
CODES = [
    (1, 499), (2, 500), (3, 400), (4, 504), (5, 404), (6, 409), (7, 403), (8, 429),
    (9, 400), (10, 409), (11, 400), (12, 501), (13, 500), (14, 503), (15, 500), (16, 401),
]  # fmt: skip


@pytest.mark.parametrize(("code", "status"), CODES)
async def test_grpc_codes_map_to_http_statuses(edge: str, code: int, status: int) -> None:
    answer = await fetch(f"{edge}/v1/fail", "POST", f'{{"code": {code}, "message": "m{code}"}}')
    assert answer.status == status
    assert answer.json() == {"code": code, "message": f"m{code}", "details": []}


async def test_error_details_and_metadata_are_carried_through(edge: str) -> None:
    body = '{"code": 3, "message": "bad", "field": "book.title", "header": "h1", "trailer": "t1"}'
    answer = await fetch(f"{edge}/v1/fail", "POST", body)
    assert answer.status == 400
    assert answer.json()["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "book.title", "description": "echo says no"}],
        }
    ]
    assert answer.headers["grpc-metadata-x-fail-header"] == "h1"
    assert answer.headers["grpc-trailer-x-fail-trailer"] == "t1"


async def test_headers_become_metadata_and_metadata_comes_back(edge: str) -> None:
    headers = {
        "authorization": "Bearer abc",
        "x-request-id": "req-1",
        "grpc-metadata-color": "blue",
        "grpc-metadata-x-shop-user": "mallory",  # only the edge may say who the user is
        "grpc-metadata-grpc-timeout": "1n",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "user-agent": "test",
    }
    answer = await fetch(f"{edge}/v1/files/x", headers=headers)
    metadata = answer.json()["metadata"]
    assert metadata["authorization"] == "Bearer abc"
    assert metadata["x-request-id"] == "req-1"
    assert metadata["color"] == "blue"
    assert metadata["traceparent"] == headers["traceparent"]
    assert "x-shop-user" not in metadata
    assert "test" not in metadata["user-agent"]  # grpc's own, not the client's
    assert answer.headers["grpc-metadata-x-echo-header"] == "sent"
    assert answer.headers["grpc-trailer-x-echo-trailer"] == "sent"


async def test_grpc_timeout_sets_the_deadline_and_a_default_applies(edge: str) -> None:
    asked = await fetch(f"{edge}/v1/files/x", headers={"grpc-timeout": "2S"})
    assert 1.0 < float(asked.json()["metadata"]["x-echo-deadline"]) <= 2.1  # wire rounding
    default = await fetch(f"{edge}/v1/files/x")
    assert 5.0 < float(default.json()["metadata"]["x-echo-deadline"]) <= 10.1
    bad = await fetch(f"{edge}/v1/files/x", headers={"grpc-timeout": "soon"})
    assert bad.status == 400
    assert bad.json()["code"] == 3


async def test_a_stream_is_newline_delimited_json(edge: str) -> None:
    answer = await fetch(f"{edge}/v1/watch/3")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in answer.body.split(b"\n") if line]
    assert [line["result"].get("index", 0) for line in lines] == [0, 1, 2]


async def test_a_stream_as_server_sent_events(edge: str) -> None:
    answer = await fetch(f"{edge}/v1/watch/2", headers={"accept": "text/event-stream"})
    assert answer.headers["content-type"] == "text/event-stream"
    events = [e for e in answer.body.decode().split("\n\n") if e]
    assert len(events) == 2
    assert all(e.startswith('data: {"result":') for e in events)


async def test_an_error_mid_stream_ends_it_with_an_error_object(edge: str) -> None:
    answer = await fetch(f"{edge}/v1/watch/2?failCode=9")
    lines = [json.loads(line) for line in answer.body.split(b"\n") if line]
    assert [("result" in line) for line in lines] == [True, True, False]
    assert lines[-1]["error"]["code"] == 9
    sse = await fetch(f"{edge}/v1/watch/1?failCode=9", headers={"accept": "text/event-stream"})
    assert 'event: error\ndata: {"error":' in sse.body.decode()


async def test_a_stream_that_fails_first_is_an_http_error(edge: str) -> None:
    answer = await fetch(f"{edge}/v1/watch/0?failCode=5")
    assert answer.status == 404
    assert answer.json()["code"] == 5


async def test_the_openapi_document_is_served(edge: str) -> None:
    answer = await fetch(f"{edge}/openapi.json")
    assert answer.status == 200
    assert answer.json()["openapi"].startswith("3.1")
