"""gateway._openapi: the OpenAPI 3.1 document of the shop's API, and of small APIs
compiled here that use every kind of binding, field and well-known type."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import google.api
import pytest
from grpc_tools import protoc
from openapi_spec_validator import validate

from gateway._descriptors import ApiSurface, RpcMethod, load_descriptor_set
from gateway._openapi import openapi_document

REPO = Path(__file__).resolve().parents[3]
SHOP = REPO / "generated" / "shop.binpb"
REF = "#/components/schemas/"

Document = dict[str, Any]


def _needs_token(method: RpcMethod) -> bool:
    return method.service == "shop.order.v1.OrderService" or method.name == "RotateSigningKey"


def _compile(folder: Path, protos: dict[str, str]) -> ApiSurface:
    """A surface from .proto sources, compiled as mesh.codegen compiles the shop's."""
    for name, text in protos.items():
        (folder / name).write_text(textwrap.dedent(text))
    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    well_known = Path(protoc.__file__).parent / "_proto"
    out = folder / "set.binpb"
    args = [
        "grpc_tools.protoc",
        f"-I{folder}",
        f"-I{googleapis}",
        f"-I{well_known}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *protos,
    ]
    assert protoc.main(args) == 0, "protoc failed; its messages are above"
    return load_descriptor_set(out)


def _operations(document: Document) -> dict[str, tuple[str, str, Document]]:
    """Each operation by its id: (HTTP method, path, operation)."""
    found = {}
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            assert operation["operationId"] not in found
            found[operation["operationId"]] = (verb, path, operation)
    return found


def _params(operation: Document, where: str) -> dict[str, Document]:
    return {p["name"]: p for p in operation.get("parameters", []) if p["in"] == where}


def _schema(document: Document, name: str) -> Document:
    schema: Document = document["components"]["schemas"][name]
    return schema


# --- The shop's API -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop() -> ApiSurface:
    return load_descriptor_set(SHOP)


@pytest.fixture(scope="module")
def doc(shop: ApiSurface) -> Document:
    return openapi_document(
        shop,
        title="ShopMesh",
        version="1.0.0",
        servers=["https://shop.example", "http://127.0.0.1:8080"],
        requires_token=_needs_token,
    )


@pytest.fixture(scope="module")
def ops(doc: Document) -> dict[str, tuple[str, str, Document]]:
    return _operations(doc)


def test_the_shop_document_is_valid_openapi_3_1(doc: Document) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"] == {"title": "ShopMesh", "version": "1.0.0"}
    assert doc["servers"] == [{"url": "https://shop.example"}, {"url": "http://127.0.0.1:8080"}]
    assert json.loads(json.dumps(doc)) == doc  # plain JSON all through


def test_one_operation_per_binding_with_unique_ids(
    shop: ApiSurface, ops: dict[str, tuple[str, str, Document]]
) -> None:
    bound = [(method.full_name, binding.verb) for method, binding in shop.bound]
    assert len(ops) == len(bound)
    assert {f"{m.service.rsplit('.', 1)[1]}_{m.name}" for m, _ in shop.bound} == set(ops)
    verb, path, operation = ops["OrderService_PlaceOrder"]
    assert (verb, path, operation["tags"]) == ("post", "/v1/orders", ["OrderService"])
    # The health service has no bindings, so no operations.
    assert not any(name.startswith("Health") for name in ops)


def test_tags_are_services_described_by_their_comments(doc: Document) -> None:
    tags = {tag["name"]: tag.get("description", "") for tag in doc["tags"]}
    assert list(tags) == sorted(tags)
    assert {"InventoryService", "OrderService", "ProductService"} <= set(tags)
    assert tags["OrderService"].startswith("OrderService takes orders")


def test_path_parameters(ops: dict[str, tuple[str, str, Document]]) -> None:
    verb, path, get_order = ops["OrderService_GetOrder"]
    assert (verb, path) == ("get", "/v1/orders/{order_id}")
    assert _params(get_order, "path") == {
        "order_id": {
            "name": "order_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "Id of the order.",
        }
    }
    assert _params(get_order, "query") == {}
    _, path, adjust = ops["InventoryService_AdjustStock"]
    assert path == "/v1/stock/{product_id}:adjust"
    assert list(_params(adjust, "path")) == ["product_id"]


def test_a_custom_verb_stays_in_the_path(doc: Document) -> None:
    assert "get" in doc["paths"]["/v1/products:batchGet"]
    assert "post" in doc["paths"]["/v1/auth/keys:rotate"]


def test_list_orders_query_parameters(
    shop: ApiSurface, ops: dict[str, tuple[str, str, Document]]
) -> None:
    _, _, list_orders = ops["OrderService_ListOrders"]
    query = _params(list_orders, "query")
    assert list(query) == ["customerId", "pageSize", "pageToken"]
    assert query["pageSize"]["schema"] == {"type": "integer", "format": "int32"}
    assert query["customerId"]["schema"] == {"type": "string"}
    assert query["pageToken"]["description"].startswith("next_page_token from")
    assert "requestBody" not in list_orders

    proto_names = _operations(openapi_document(shop, title="t", version="v", use_proto_names=True))
    _, _, list_orders = proto_names["OrderService_ListOrders"]
    assert list(_params(list_orders, "query")) == ["customer_id", "page_size", "page_token"]


def test_a_repeated_field_is_an_exploded_array(ops: dict[str, tuple[str, str, Document]]) -> None:
    _, _, batch = ops["ProductService_BatchGetProducts"]
    ids = _params(batch, "query")["productIds"]
    assert ids["schema"] == {"type": "array", "items": {"type": "string"}}
    assert (ids["style"], ids["explode"]) == ("form", True)


def test_place_order_body(doc: Document, ops: dict[str, tuple[str, str, Document]]) -> None:
    _, _, place = ops["OrderService_PlaceOrder"]
    assert "parameters" not in place
    body = place["requestBody"]
    assert body["required"] is True
    assert body["content"] == {
        "application/json": {"schema": {"$ref": REF + "shop.order.v1.PlaceOrderRequest"}}
    }
    request = _schema(doc, "shop.order.v1.PlaceOrderRequest")
    assert request["type"] == "object"
    assert list(request["properties"]) == ["customerId", "items", "requestId", "shippingAddress"]
    assert request["properties"]["items"]["type"] == "array"
    assert request["properties"]["items"]["items"] == {"$ref": REF + "shop.order.v1.OrderItem"}
    assert request["description"] == "PlaceOrderRequest describes a new order."
    ok = place["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": REF + "shop.order.v1.PlaceOrderResponse"}


def test_a_whole_body_leaves_out_the_path_fields(ops: dict[str, tuple[str, str, Document]]) -> None:
    _, _, adjust = ops["InventoryService_AdjustStock"]
    schema = adjust["requestBody"]["content"]["application/json"]["schema"]
    assert list(schema["properties"]) == ["delta", "reason"]
    assert schema["properties"]["delta"]["type"] == "string"


def test_int64_is_a_string_and_other_json_forms(doc: Document) -> None:
    item = _schema(doc, "shop.order.v1.OrderItem")["properties"]
    assert item["quantity"]["type"] == "string"
    assert item["quantity"]["format"] == "int64"
    assert item["quantity"]["description"] == "Units, at least 1."
    assert item["unitPrice"]["$ref"] == REF + "google.type.Money"
    money = _schema(doc, "google.type.Money")["properties"]
    assert (money["units"]["type"], money["nanos"]["type"]) == ("string", "integer")
    order = _schema(doc, "shop.order.v1.Order")["properties"]
    assert order["createTime"]["type"] == "string"
    assert order["createTime"]["format"] == "date-time"
    assert order["status"]["$ref"] == REF + "shop.order.v1.OrderStatus"


def test_order_status_is_a_string_of_its_names(doc: Document) -> None:
    status = _schema(doc, "shop.order.v1.OrderStatus")
    assert status["type"] == "string"
    assert status["enum"] == [
        "ORDER_STATUS_UNSPECIFIED",
        "ORDER_STATUS_CONFIRMED",
        "ORDER_STATUS_PENDING",
        "ORDER_STATUS_CANCELLED",
    ]
    assert "number" in status["description"]
    assert "`ORDER_STATUS_PENDING` (2): Its saga is still running" in status["description"]


def test_security_only_where_a_token_is_required(
    shop: ApiSurface, doc: Document, ops: dict[str, tuple[str, str, Document]]
) -> None:
    assert doc["components"]["securitySchemes"] == {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
        }
    }
    assert "security" not in doc  # no global requirement
    needing = {f"{m.service.rsplit('.', 1)[1]}_{m.name}" for m, _ in shop.bound if _needs_token(m)}
    assert {
        "OrderService_PlaceOrder",
        "OrderService_GetOrder",
        "OrderService_ListOrders",
    } <= needing
    for operation_id, (_, _, operation) in ops.items():
        secured = operation_id in needing
        assert ("security" in operation) is secured, operation_id
        assert ("401" in operation["responses"]) is secured, operation_id
        if secured:
            assert operation["security"] == [{"bearerAuth": []}]


def test_errors_are_the_shared_status(
    doc: Document, ops: dict[str, tuple[str, str, Document]]
) -> None:
    for _, _, operation in ops.values():
        error = operation["responses"]["default"]["content"]["application/json"]["schema"]
        assert error == {"$ref": REF + "google.rpc.Status"}
    status = _schema(doc, "google.rpc.Status")["properties"]
    assert status["code"]["type"] == "integer"
    assert status["message"]["type"] == "string"
    assert status["details"]["type"] == "array"
    assert status["details"]["items"]["properties"]["@type"]["type"] == "string"
    assert status["details"]["items"]["required"] == ["@type"]


def test_summaries_and_descriptions_come_from_comments(
    ops: dict[str, tuple[str, str, Document]],
) -> None:
    _, _, place = ops["OrderService_PlaceOrder"]
    assert place["summary"] == (
        "PlaceOrder prices the items, records the order PENDING and runs its saga: "
        "reserve_stock, charge_payment, create_shipment."
    )
    assert " ".join(place["description"].split()).startswith(place["summary"])
    assert "INVALID_ARGUMENT" in place["description"]
    _, _, jwks = ops["AuthService_GetJwks"]
    assert "buf:lint" not in jwks["description"]
    assert "RFC 7517" in jwks["description"]
    _, _, list_orders = ops["OrderService_ListOrders"]
    # A one-sentence comment is the summary alone.
    assert "description" not in list_orders


def test_the_document_is_deterministic(shop: ApiSurface, doc: Document) -> None:
    again = openapi_document(
        load_descriptor_set(SHOP),
        title="ShopMesh",
        version="1.0.0",
        servers=["https://shop.example", "http://127.0.0.1:8080"],
        requires_token=_needs_token,
    )
    assert json.dumps(again) == json.dumps(doc)
    assert list(doc["paths"]) == sorted(doc["paths"])
    assert list(doc["components"]["schemas"]) == sorted(doc["components"]["schemas"])
    # Only what the operations refer to.
    assert not any(name.startswith("grpc.health") for name in doc["components"]["schemas"])


# --- Every kind of binding and field --------------------------------------------------

LIBRARY = """
    syntax = "proto3";

    package demo.library.v1;

    import "google/api/annotations.proto";
    import "google/protobuf/any.proto";
    import "google/protobuf/duration.proto";
    import "google/protobuf/empty.proto";
    import "google/protobuf/field_mask.proto";
    import "google/protobuf/struct.proto";
    import "google/protobuf/timestamp.proto";
    import "google/protobuf/wrappers.proto";

    // LibraryService lends books.
    service LibraryService {
      // GetBook returns one book. NOT_FOUND if there is none.
      rpc GetBook(GetBookRequest) returns (Book) {
        option (google.api.http) = {
          get: "/v1/{name=shelves/*/books/*}"
          additional_bindings {get: "/v1/books/{name=**}"}
          additional_bindings {get: "/v1/catalog/*/{name}"}
        };
      }

      // UpdateBook changes a book.
      rpc UpdateBook(UpdateBookRequest) returns (Book) {
        option (google.api.http) = {
          patch: "/v2/{book.name=shelves/*/books/*}"
          body: "book"
        };
      }

      // GetCover returns the cover of a book.
      rpc GetCover(GetBookRequest) returns (CoverResponse) {
        option (google.api.http) = {
          get: "/v1/{name=shelves/*/books/*}/cover"
          response_body: "cover"
        };
      }

      // WatchBooks streams the books of a shelf as they change.
      rpc WatchBooks(WatchBooksRequest) returns (stream Book) {
        option (google.api.http) = {get: "/v1/{parent=shelves/*}/books:watch"};
      }

      // SearchBooks finds books.
      rpc SearchBooks(SearchBooksRequest) returns (SearchBooksResponse) {
        option (google.api.http) = {
          get: "/v1/books:search"
          additional_bindings {post: "/v1/books:search" body: "*"}
        };
      }

      // Ping answers.
      rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty) {
        option (google.api.http) = {post: "/v1:ping" body: "*"};
      }

      // NotBound has no HTTP binding.
      rpc NotBound(google.protobuf.Empty) returns (google.protobuf.Empty);
    }

    // Genre of a book.
    enum Genre {
      // Not set.
      GENRE_UNSPECIFIED = 0;
      // Made up.
      GENRE_FICTION = 1;
      // True.
      GENRE_HISTORY = 2;
    }

    // Book is a book on a shelf.
    message Book {
      // Resource name: shelves/{shelf}/books/{book}.
      string name = 1;
      // Genres, most fitting first.
      repeated Genre genres = 2;
      // When it was published.
      google.protobuf.Timestamp publish_time = 3;
      // Reading time.
      google.protobuf.Duration reading_time = 4;
      // Page count, if known.
      google.protobuf.Int64Value page_count = 5;
      // Subtitle, if any.
      google.protobuf.StringValue subtitle = 6;
      // Free-form attributes.
      google.protobuf.Struct attributes = 7;
      // Anything at all.
      google.protobuf.Value extra = 8;
      // A list of anything.
      google.protobuf.ListValue tags = 9;
      // Some message.
      google.protobuf.Any annex = 10;
      // Copies per branch.
      map<string, int64> copies = 11;
      // Position by floor.
      map<int32, Position> positions = 12;
      // How it is priced.
      oneof price {
        // Price in cents.
        int64 cents = 13;
        // Free to borrow.
        bool free = 14;
      }
      // Raw bytes.
      bytes cover = 15;
      // Rating.
      double rating = 16;
      // Times borrowed.
      uint64 borrowed = 17;
      // Proto3 optional.
      optional string isbn = 18;
      // The book this one continues.
      Book sequel_of = 19;
      // Fields of the last update.
      google.protobuf.FieldMask changed = 20;
    }

    // Position is where a book stands.
    message Position {
      // Row.
      int32 row = 1;
    }

    // GetBookRequest names a book.
    message GetBookRequest {
      // Resource name of the book.
      string name = 1;
    }

    // UpdateBookRequest changes a book.
    message UpdateBookRequest {
      // The book, its name naming the one to change.
      Book book = 1;
      // Fields to change.
      google.protobuf.FieldMask update_mask = 2;
      // Validate only.
      bool validate_only = 3;
    }

    // CoverResponse holds a cover.
    message CoverResponse {
      // The cover image.
      bytes cover = 1;
      // Its media type.
      string media_type = 2;
    }

    // WatchBooksRequest names a shelf.
    message WatchBooksRequest {
      // Resource name of the shelf.
      string parent = 1;
    }

    // Filter narrows a search; filters nest.
    message Filter {
      // Title contains this.
      string title = 1;
      // Genres, any of.
      repeated Genre genres = 2;
      // Published after.
      google.protobuf.Timestamp after = 3;
      // Minimum pages.
      google.protobuf.Int32Value min_pages = 4;
      // And also this filter.
      Filter and = 5;
      // Labels.
      map<string, string> labels = 6;
      // Ids.
      repeated int64 ids = 7;
      // Filters, any of.
      repeated Filter any = 8;
      // Anything else.
      google.protobuf.Struct meta = 9;
    }

    // SearchBooksRequest asks for books.
    message SearchBooksRequest {
      // What to look for.
      Filter filter = 1;
      // Most books to return.
      int32 page_size = 2;
      // Only this genre.
      Genre genre = 3;
    }

    // SearchBooksResponse holds the books found.
    message SearchBooksResponse {
      // Books.
      repeated Book books = 1;
    }
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> ApiSurface:
    return _compile(tmp_path_factory.mktemp("library"), {"library.proto": LIBRARY})


@pytest.fixture(scope="module")
def lib(library: ApiSurface) -> Document:
    document = openapi_document(library, title="Library", version="2")
    validate(document)
    return document


@pytest.fixture(scope="module")
def lib_ops(lib: Document) -> dict[str, tuple[str, str, Document]]:
    return _operations(lib)


def test_additional_bindings_get_numbered_operations(
    lib_ops: dict[str, tuple[str, str, Document]],
) -> None:
    paths = {name: (verb, path) for name, (verb, path, _) in lib_ops.items() if "GetBook" in name}
    assert paths == {
        "LibraryService_GetBook": ("get", "/v1/{name}"),
        "LibraryService_GetBook_2": ("get", "/v1/books/{name}"),
        "LibraryService_GetBook_3": ("get", "/v1/catalog/{wildcard-1}/{name}"),
    }
    assert lib_ops["LibraryService_SearchBooks_2"][:2] == ("post", "/v1/books:search")
    assert not any("NotBound" in name for name in lib_ops)


def test_a_multi_segment_variable_is_one_parameter_with_a_pattern(
    lib_ops: dict[str, tuple[str, str, Document]],
) -> None:
    name = _params(lib_ops["LibraryService_GetBook"][2], "path")["name"]
    assert name["required"] is True
    assert name["schema"] == {"type": "string", "pattern": "^shelves/[^/]+/books/[^/]+$"}
    assert name["description"].startswith("Resource name of the book.")
    assert "`shelves/*/books/*`" in name["description"]
    assert "`/`" in name["description"]
    deep = _params(lib_ops["LibraryService_GetBook_2"][2], "path")["name"]
    assert deep["schema"]["pattern"] == "^([^/]+(/[^/]+)*)?$"


def test_an_anonymous_wildcard_is_a_parameter_the_server_ignores(
    lib_ops: dict[str, tuple[str, str, Document]],
) -> None:
    params = lib_ops["LibraryService_GetBook_3"][2]["parameters"]
    assert [(p["name"], p["in"]) for p in params] == [("wildcard-1", "path"), ("name", "path")]
    assert "ignores" in params[0]["description"]


def test_a_field_body_and_a_nested_path_variable(
    lib_ops: dict[str, tuple[str, str, Document]],
) -> None:
    verb, path, update = lib_ops["LibraryService_UpdateBook"]
    assert (verb, path) == ("patch", "/v2/{book.name}")
    assert list(_params(update, "path")) == ["book.name"]
    assert _params(update, "path")["book.name"]["schema"]["pattern"] == (
        "^shelves/[^/]+/books/[^/]+$"
    )
    # The other request fields, not the body's, are query parameters.
    query = _params(update, "query")
    assert list(query) == ["updateMask", "validateOnly"]
    assert query["updateMask"]["schema"]["type"] == "string"
    body = update["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": REF + "demo.library.v1.Book"}
    assert body["description"] == "The book, its name naming the one to change."


def test_response_body_is_that_field(lib_ops: dict[str, tuple[str, str, Document]]) -> None:
    ok = lib_ops["LibraryService_GetCover"][2]["responses"]["200"]
    assert ok["content"] == {
        "application/json": {"schema": {"type": "string", "contentEncoding": "base64"}}
    }
    assert "`cover`" in ok["description"]


def test_a_server_stream_is_ndjson_or_server_sent_events(
    lib_ops: dict[str, tuple[str, str, Document]],
) -> None:
    verb, path, watch = lib_ops["LibraryService_WatchBooks"]
    assert (verb, path) == ("get", "/v1/{parent}/books:watch")
    content = watch["responses"]["200"]["content"]
    assert list(content) == ["application/x-ndjson", "text/event-stream"]
    frame = content["application/x-ndjson"]["schema"]["properties"]
    assert frame == {
        "result": {"$ref": REF + "demo.library.v1.Book"},
        "error": {"$ref": REF + "google.rpc.Status"},
    }
    assert content["text/event-stream"]["schema"]["type"] == "string"


def test_well_known_types_take_their_json_forms(lib: Document) -> None:
    book = _schema(lib, "demo.library.v1.Book")["properties"]
    assert book["publishTime"]["format"] == "date-time"
    assert book["readingTime"]["type"] == "string"
    assert book["readingTime"]["pattern"] == r"^-?[0-9]+(\.[0-9]{1,9})?s$"
    assert book["readingTime"]["description"].startswith("Reading time.")
    assert book["pageCount"]["type"] == ["string", "null"]
    assert book["pageCount"]["format"] == "int64"
    assert book["subtitle"]["type"] == ["string", "null"]
    assert book["attributes"]["type"] == "object"
    assert book["attributes"]["additionalProperties"] is True
    assert "type" not in book["extra"]  # any JSON value
    assert book["tags"]["type"] == "array"
    assert book["annex"]["properties"]["@type"]["type"] == "string"
    assert book["changed"]["type"] == "string"
    assert book["cover"] == {
        "type": "string",
        "contentEncoding": "base64",
        "description": "Raw bytes.",
    }
    assert book["rating"]["type"] == "number"
    assert (book["borrowed"]["type"], book["borrowed"]["format"]) == ("string", "uint64")
    ping = _operations(lib)["LibraryService_Ping"][2]
    empty = ping["responses"]["200"]["content"]["application/json"]["schema"]
    assert empty == {"type": "object"}
    # Inlined, not components.
    assert not any(name.startswith("google.protobuf") for name in lib["components"]["schemas"])


def test_maps_are_objects(lib: Document) -> None:
    book = _schema(lib, "demo.library.v1.Book")["properties"]
    assert book["copies"]["type"] == "object"
    assert book["copies"]["additionalProperties"]["type"] == "string"
    assert book["positions"]["additionalProperties"] == {"$ref": REF + "demo.library.v1.Position"}
    assert book["positions"]["propertyNames"] == {"pattern": "^-?[0-9]+$"}
    assert not any(name.endswith("Entry") for name in lib["components"]["schemas"])


def test_oneof_members_say_so(lib: Document) -> None:
    book = _schema(lib, "demo.library.v1.Book")
    assert "oneof `price`" in book["properties"]["cents"]["description"]
    assert "`free`" in book["properties"]["cents"]["description"]
    assert "oneof `price`" in book["properties"]["free"]["description"]
    assert "At most one of `cents`, `free`" in book["description"]
    # A proto3 optional field is in a synthetic oneof, which is not documented.
    assert book["properties"]["isbn"] == {"type": "string", "description": "Proto3 optional."}


def test_a_repeated_enum(lib: Document, lib_ops: dict[str, tuple[str, str, Document]]) -> None:
    book = _schema(lib, "demo.library.v1.Book")["properties"]
    assert book["genres"]["type"] == "array"
    assert book["genres"]["items"] == {"$ref": REF + "demo.library.v1.Genre"}
    assert _schema(lib, "demo.library.v1.Genre")["enum"] == [
        "GENRE_UNSPECIFIED",
        "GENRE_FICTION",
        "GENRE_HISTORY",
    ]
    genres = _params(lib_ops["LibraryService_SearchBooks"][2], "query")["filter.genres"]
    assert genres["schema"] == {
        "type": "array",
        "items": {
            "type": "string",
            "enum": ["GENRE_UNSPECIFIED", "GENRE_FICTION", "GENRE_HISTORY"],
        },
    }
    assert genres["explode"] is True


def test_query_parameters_flatten_nested_messages(
    lib_ops: dict[str, tuple[str, str, Document]],
) -> None:
    query = _params(lib_ops["LibraryService_SearchBooks"][2], "query")
    # Not filter.and.* (a recursive message), filter.labels (a map), filter.any
    # (repeated messages) or filter.meta (a Struct).
    assert list(query) == [
        "filter.title",
        "filter.genres",
        "filter.after",
        "filter.minPages",
        "filter.ids",
        "pageSize",
        "genre",
    ]
    assert query["filter.after"]["schema"]["format"] == "date-time"
    assert query["filter.minPages"]["schema"] == {"type": "integer", "format": "int32"}
    assert query["filter.ids"]["schema"]["items"]["type"] == "string"
    assert query["genre"]["schema"]["enum"][0] == "GENRE_UNSPECIFIED"
    # The whole-body binding of the same method has no query parameters.
    assert "parameters" not in lib_ops["LibraryService_SearchBooks_2"][2]


def test_a_recursive_message_refers_to_itself(lib: Document) -> None:
    book = _schema(lib, "demo.library.v1.Book")["properties"]
    assert book["sequelOf"]["$ref"] == REF + "demo.library.v1.Book"
    filter_ = _schema(lib, "demo.library.v1.Filter")["properties"]
    assert filter_["and"]["$ref"] == REF + "demo.library.v1.Filter"
    assert filter_["any"]["items"] == {"$ref": REF + "demo.library.v1.Filter"}


def test_proto_names(library: ApiSurface) -> None:
    document = openapi_document(library, title="Library", version="2", use_proto_names=True)
    validate(document)
    book = _schema(document, "demo.library.v1.Book")["properties"]
    assert "publish_time" in book
    assert "publishTime" not in book
    search = _operations(document)["LibraryService_SearchBooks"][2]
    assert "filter.min_pages" in _params(search, "query")


# --- Bindings OpenAPI holds the same --------------------------------------------------

SHELVES = """
    syntax = "proto3";
    package demo.shelves.v1;
    import "google/api/annotations.proto";
    import "google/protobuf/empty.proto";
    service Shelves {
      rpc GetShelf(GetRequest) returns (Thing) {
        option (google.api.http) = {get: "/v1/{name=shelves/*}"};
      }
      rpc GetBook(GetRequest) returns (Thing) {
        option (google.api.http) = {get: "/v1/{name=shelves/*/books/*}"};
      }
      rpc UpdateBook(UpdateRequest) returns (Thing) {
        option (google.api.http) = {
          patch: "/v1/{thing.name=shelves/*/books/*}"
          body: "thing"
        };
      }
      rpc GetThing(GetRequest) returns (Thing) {
        option (google.api.http) = {get: "/v2/things/{name}"};
      }
      rpc DeleteThing(DeleteRequest) returns (google.protobuf.Empty) {
        option (google.api.http) = {delete: "/v2/things/{id}"};
      }
    }
    message GetRequest { string name = 1; }
    message DeleteRequest { string id = 1; }
    message UpdateRequest { Thing thing = 1; }
    message Thing { string name = 1; }
"""

OTHER = """
    syntax = "proto3";
    package demo.other.v1;
    import "google/api/annotations.proto";
    import "shelves.proto";
    service Shelves {
      rpc GetShelf(demo.shelves.v1.GetRequest) returns (demo.shelves.v1.Thing) {
        option (google.api.http) = {get: "/v3/{name}"};
      }
    }
"""


@pytest.fixture(scope="module")
def shelves(tmp_path_factory: pytest.TempPathFactory) -> Document:
    surface = _compile(
        tmp_path_factory.mktemp("shelves"), {"shelves.proto": SHELVES, "other.proto": OTHER}
    )
    document = openapi_document(surface, title="Shelves", version="1")
    validate(document)
    return document


def test_bindings_with_the_same_path_and_method_are_expanded(shelves: Document) -> None:
    found = {name: (verb, path) for name, (verb, path, _) in _operations(shelves).items()}
    assert found["demo_shelves_v1_Shelves_GetShelf"] == ("get", "/v1/shelves/{name-1}")
    assert found["demo_shelves_v1_Shelves_GetBook"] == (
        "get",
        "/v1/shelves/{name-1}/books/{name-2}",
    )
    # PATCH shares GetBook's path, its parameters renamed.
    assert found["demo_shelves_v1_Shelves_UpdateBook"] == (
        "patch",
        "/v1/shelves/{name-1}/books/{name-2}",
    )
    update = shelves["paths"]["/v1/shelves/{name-1}/books/{name-2}"]["patch"]
    first = _params(update, "path")["name-1"]
    assert "`thing.name`, which is `shelves/{name-1}/books/{name-2}`" in first["description"]


def test_paths_differing_only_in_names_are_one_path(shelves: Document) -> None:
    item = shelves["paths"]["/v2/things/{name}"]
    assert list(item) == ["get", "delete"]
    renamed = _params(item["delete"], "path")["name"]
    assert "Fills `id`." in renamed["description"]
    assert "/v2/things/{id}" not in shelves["paths"]


def test_services_sharing_a_short_name_use_full_names(shelves: Document) -> None:
    assert [tag["name"] for tag in shelves["tags"]] == [
        "demo_other_v1_Shelves",
        "demo_shelves_v1_Shelves",
    ]
    assert "demo_other_v1_Shelves_GetShelf" in _operations(shelves)


@pytest.mark.parametrize(
    ("bindings", "error"),
    [
        (
            ['get: "/v1/x/{name}"', 'get: "/v1/x/{name}"'],
            "bind the same path",
        ),
        (
            ['get: "/v1/x/{name}"', 'get: "/v1/x/{id}"'],
            "bind the same path",
        ),
        (['get: "/v1/{name"'], "unclosed '{'"),
        (['get: "v1/x"'], "must start with '/'"),
        (['get: "/v1/{nope}"'], "has no field 'nope'"),
        (['get: "/v1/{thing}"'], "not a scalar field"),
        (['post: "/v1/x" body: "nope"'], "has no field 'nope'"),
    ],
)
def test_unusable_bindings_are_refused(tmp_path: Path, bindings: list[str], error: str) -> None:
    rpcs = "\n".join(
        f"rpc Call{n}(Req) returns (Req) {{ option (google.api.http) = {{{rule}}}; }}"
        for n, rule in enumerate(bindings)
    )
    proto = f"""
        syntax = "proto3";
        package demo.bad.v1;
        import "google/api/annotations.proto";
        service Bad {{
        {rpcs}
        }}
        message Req {{ string name = 1; string id = 2; Req thing = 3; }}
    """
    surface = _compile(tmp_path, {"bad.proto": proto})
    with pytest.raises(ValueError, match=error):
        openapi_document(surface, title="Bad", version="1")


def test_requires_token_sees_each_method(shop: ApiSurface) -> None:
    seen: list[str] = []

    def record(method: RpcMethod) -> bool:
        seen.append(method.full_name)
        return False

    openapi_document(shop, title="t", version="v", requires_token=record)
    assert sorted(set(seen)) == sorted({m.full_name for m, _ in shop.bound})


def test_a_caller_may_change_the_document(shop: ApiSurface) -> None:
    first = openapi_document(shop, title="t", version="v")
    _schema(first, "google.rpc.Status")["properties"]["code"]["type"] = "string"
    first["components"]["securitySchemes"]["bearerAuth"]["scheme"] = "basic"
    _schema(first, "shop.order.v1.Order")["properties"]["createTime"]["format"] = "date"
    second = openapi_document(shop, title="t", version="v")
    assert _schema(second, "google.rpc.Status")["properties"]["code"]["type"] == "integer"
    assert second["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert _schema(second, "shop.order.v1.Order")["properties"]["createTime"]["format"] == (
        "date-time"
    )
