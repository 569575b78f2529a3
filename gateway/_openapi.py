"""An OpenAPI 3.1 document of what the edge serves, from the google.api.http bindings of
an ApiSurface and the proto3 JSON mapping of its messages.

What the document says, and the choices made where OpenAPI and HttpRule differ:

- One operation per binding, additional_bindings included. operationId is
  `Service_Method`, then `Service_Method_2`, `Service_Method_3`... for the extra
  bindings; `Service` is the service's short name unless two packages share it, and
  then its full name with `_` for `.`. Tags are the same service names.
- Path templates: `{field}` and `{a.b}` become path parameters named as written in
  the template (`order_id`, `book.name`). A variable with a pattern of its own,
  `{name=shelves/*/books/*}`, becomes `{name}` with a schema `pattern`; its `/` are
  part of the value, which the description says. Anonymous `*` and `**` segments become
  path parameters `wildcard-1`, `wildcard-2`... (a `-` no field name can hold), whose
  value the server ignores. A custom verb stays in the path (`/v1/products:batchGet`).
  Swagger UI's "Try it out" percent-encodes a path parameter's `/` (%2F), which a
  multi-segment variable does not match: only the expanded form below avoids that.
- OpenAPI holds two paths that differ only in their parameters' names the same, and
  gives each path one operation a method. So bindings whose paths would be the same
  but for those names, and share an HTTP method (AIP-style `GET /v1/{name=shelves/*}`
  and `GET /v1/{name=shelves/*/books/*}` both give `GET /v1/{name}`), are rendered
  expanded: the pattern's literals go into the path and each of its wildcards becomes
  a parameter `name-1`, `name-2`... (`/v1/shelves/{name-1}/books/{name-2}`). Then
  bindings whose paths are still the same but for the names (`GET /v1/{name=...}` and
  `PATCH /v1/{book.name=...}`) share the path of the first of them, their parameters
  renamed by position; each parameter's description names the field it fills. Two
  bindings left with the same path and method make the API itself ambiguous, and
  `openapi_document` raises ValueError.
- HTTP methods OpenAPI 3.1 has no field for (a custom HttpRule kind other than HEAD,
  OPTIONS or TRACE) are left out of the document.
- Query parameters, for a binding with no body or a field body: every request field
  bound neither by the path nor by the body, nested messages flattened as `a.b`, named
  in lowerCamelCase (or as in the .proto with use_proto_names). Repeated scalars are
  arrays (`style: form`, `explode: true`); enums are strings with their names;
  Timestamp, Duration, FieldMask and the wrappers take their JSON string or scalar
  forms. Maps, repeated messages, Struct, Value, ListValue, Any and Empty cannot be
  query parameters and are left out; a message type already on the way down (a
  recursive message) is not entered again, and nesting stops at _QUERY_DEPTH.
- Request body (`application/json`, required): with `body: "*"` the request message
  (inline, without the path-bound fields, when there are any); with `body: "field"`
  that field's schema as it is. A client-streaming method's body is
  `application/x-ndjson`, one message a line.
- 200 response: the response message, or its `response_body` field. A
  server-streaming method answers `application/x-ndjson`, one `{"result": message}`
  a line (grpc-gateway's framing; `{"error": Status}` ends a failed stream), and
  `text/event-stream` (the same objects as each event's data). `default` is the error: the
  shared `google.rpc.Status` schema (`code`, `message`, `details` with `@type`).
- Schemas follow the proto3 JSON mapping, keyed in components/schemas by full message
  or enum name: 64-bit integers are strings (`format: int64`/`uint64`, and
  `examples: ["0"]`, or Swagger UI's samples would show numbers), bytes are base64
  strings (`contentEncoding`), enums are strings with their names (parsers
  also take the numbers, which the description says), maps are objects with
  `additionalProperties`, members of a oneof say so in their description. The
  well-known types are inlined in their JSON forms; wrappers are nullable
  (`type: [..., "null"]`). Descriptions come from the .proto comments, without
  `buf:lint:` directives. Floats are plain `number`: the strings "NaN", "Infinity"
  and "-Infinity" parsers also accept are not described.
- Security: a `bearerAuth` scheme (HTTP bearer, JWT) always; operations for which
  `requires_token(method)` is true require it and list a 401 response.
- The output is deterministic: paths, schemas and tags are sorted by name, the
  operations of a path in OpenAPI's order of methods; properties and parameters keep
  the .proto's order, so the same surface always serializes to the same bytes. The
  document shares no objects with this module: a caller may change it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    OneofDescriptor,
)

from gateway._descriptors import ApiSurface, HttpBinding, RpcMethod
from gateway._template import PathTemplate, Variable

__all__ = ["OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION = "3.1.0"

Schema = dict[str, object]

_REF = "#/components/schemas/"
_STATUS = "google.rpc.Status"
_BEARER = "bearerAuth"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_QUERY_DEPTH = 6
"""Most levels of nested messages that query parameters are flattened from."""

_T = FieldDescriptor
# 64-bit integers are JSON strings; the example keeps Swagger UI from showing a number.
_INT64: Schema = {"type": "string", "format": "int64", "examples": ["0"]}
_UINT64: Schema = {"type": "string", "format": "uint64", "examples": ["0"]}
_INT32: Schema = {"type": "integer", "format": "int32"}
_UINT32: Schema = {"type": "integer", "format": "uint32", "minimum": 0}
_SCALARS: dict[int, Schema] = {
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_INT64: _INT64,
    _T.TYPE_SINT64: _INT64,
    _T.TYPE_SFIXED64: _INT64,
    _T.TYPE_UINT64: _UINT64,
    _T.TYPE_FIXED64: _UINT64,
    _T.TYPE_INT32: _INT32,
    _T.TYPE_SINT32: _INT32,
    _T.TYPE_SFIXED32: _INT32,
    _T.TYPE_UINT32: _UINT32,
    _T.TYPE_FIXED32: _UINT32,
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

# Well-known types that are scalars in JSON, so they can also be query parameters.
_WRAPPERS: dict[str, Schema] = {
    "google.protobuf.DoubleValue": _SCALARS[_T.TYPE_DOUBLE],
    "google.protobuf.FloatValue": _SCALARS[_T.TYPE_FLOAT],
    "google.protobuf.Int64Value": _INT64,
    "google.protobuf.UInt64Value": _UINT64,
    "google.protobuf.Int32Value": _INT32,
    "google.protobuf.UInt32Value": _UINT32,
    "google.protobuf.BoolValue": _SCALARS[_T.TYPE_BOOL],
    "google.protobuf.StringValue": _SCALARS[_T.TYPE_STRING],
    "google.protobuf.BytesValue": _SCALARS[_T.TYPE_BYTES],
}
_SCALAR_WKTS: dict[str, Schema] = {
    "google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": 'RFC 3339 in UTC ("Z"), e.g. "2024-01-31T12:00:00Z".',
    },
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": 'Seconds with up to 9 decimals and an "s" suffix, e.g. "1.5s".',
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": 'Field paths in lowerCamelCase, comma-separated, e.g. "name,price".',
    },
    **_WRAPPERS,
}
_ANY: Schema = {
    "type": "object",
    "properties": {
        "@type": {
            "type": "string",
            "description": 'Type URL of the message, e.g. "type.googleapis.com/google.rpc.ErrorInfo".',
        }
    },
    "required": ["@type"],
    "additionalProperties": True,
    "description": "Any message: its `@type` and its fields (or `value` for a "
    "well-known type with a non-object JSON form).",
}
_OBJECT_WKTS: dict[str, Schema] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": _ANY,
}
_STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "An error, as a gRPC status in its JSON form.",
    "properties": {
        "code": {
            "type": "integer",
            "format": "int32",
            "description": "The gRPC status code, e.g. 3 for INVALID_ARGUMENT, 5 for NOT_FOUND.",
        },
        "message": {"type": "string", "description": "What went wrong, for a developer."},
        "details": {
            "type": "array",
            "items": _ANY,
            "description": "Error details (google.rpc.ErrorInfo, BadRequest, ...).",
        },
    },
}
_SECURITY_SCHEMES: Schema = {
    _BEARER: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": 'An access token from the auth service: "Authorization: Bearer <token>".',
    }
}


def openapi_document(
    surface: ApiSurface,
    *,
    title: str,
    version: str,
    servers: Sequence[str] = (),
    requires_token: Callable[[RpcMethod], bool] = lambda m: False,
    use_proto_names: bool = False,
) -> dict[str, object]:
    """The OpenAPI 3.1 document of every HTTP binding of `surface` (see the module doc).

    Args:
        title, version: the document's info.
        servers: base URLs of the edge, in order of preference; none means "/".
        requires_token: whether a method needs a bearer token.
        use_proto_names: name fields as in the .proto, not in lowerCamelCase.

    Raises:
        ValueError: a binding's template is malformed or names a field the request
            lacks, or two bindings are indistinguishable by path and method.
    """
    schemas = _Schemas(surface.comments, use_proto_names)
    operation_names = _operation_names(surface)
    placed = _place(surface)
    paths: dict[str, dict[str, object]] = {}
    used_ids: set[str] = set()
    tags: set[str] = set()
    for (method, index, binding), (path, params, verb) in placed.items():
        tag = operation_names[method.service]
        tags.add(method.service)
        operation_id = f"{tag}_{method.name}" + (f"_{index + 1}" if index else "")
        while operation_id in used_ids:
            operation_id += "_"
        used_ids.add(operation_id)
        operation = _operation(
            schemas, method, binding, params, operation_id, tag, requires_token(method)
        )
        paths.setdefault(path, {})[verb] = operation
    document: dict[str, object] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
    }
    if servers:
        document["servers"] = [{"url": url} for url in servers]
    document["tags"] = sorted(
        (_tag(service, operation_names, surface.comments) for service in tags),
        key=lambda tag: str(tag["name"]),
    )
    document["paths"] = {
        path: {verb: item[verb] for verb in _METHODS if verb in item}
        for path, item in sorted(paths.items())
    }
    components = schemas.finish()
    components[_STATUS] = _STATUS_SCHEMA
    document["components"] = {
        "schemas": dict(sorted(components.items())),
        "securitySchemes": _SECURITY_SCHEMES,
    }
    return {key: _tree(value) for key, value in document.items()}


def _tree(value: object) -> object:
    """A copy of a JSON value that shares no dict or list with this module's tables or
    with itself, so a caller may change the document freely."""
    if isinstance(value, dict):
        return {key: _tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tree(item) for item in value]
    return value


# --- Path templates -------------------------------------------------------------------


@dataclass(frozen=True)
class _Literal:
    text: str


@dataclass(frozen=True)
class _Wild:
    deep: bool
    """`**` (any number of segments) rather than `*` (one)."""


@dataclass(frozen=True)
class _Var:
    field: str
    """The field path, e.g. "book.name"."""
    pattern: tuple[_Literal | _Wild, ...]
    """What the variable matches; `{x}` is `{x=*}`."""

    @property
    def plain(self) -> bool:
        return self.pattern == (_Wild(deep=False),)


@dataclass(frozen=True)
class _Template:
    segments: tuple[_Literal | _Wild | _Var, ...]
    verb: str


def _parse(template: str) -> _Template:
    """A template in the pieces OpenAPI paths are made of (the router's grammar and
    checks; raises TemplateError, a ValueError)."""
    parsed = PathTemplate.parse(template)
    segments = tuple(
        _Var(".".join(part.field_path), tuple(map(_piece, part.pattern.split("/"))))
        if isinstance(part, Variable)
        else _piece(part)
        for part in parsed.parts
    )
    return _Template(segments, parsed.verb)


def _piece(segment: str) -> _Literal | _Wild:
    return _Wild(deep=segment == "**") if segment in ("*", "**") else _Literal(segment)


@dataclass(frozen=True)
class _PathParam:
    """One parameter of an OpenAPI path, in the order of the path."""

    name: str
    field: str | None
    """The request field it fills, None for an anonymous wildcard."""
    deep: bool = False
    """Matches `**`: any number of segments, `/` included."""
    pattern: tuple[_Literal | _Wild, ...] = ()
    """The variable's own pattern, when the parameter is all of a multi-segment one."""
    whole: tuple[str | None, ...] = ()
    """When the parameter is one wildcard of an expanded variable: the variable's
    pieces, a literal or None for each wildcard."""

    def note(self, params: Sequence[_PathParam]) -> str:
        """What the description says of the value, besides the field's comment."""
        if self.field is None:
            if self.deep:
                return "Any path segments (`**`), `/` included; the server ignores them."
            return "Any one path segment (`*`); the server ignores it."
        if self.whole:
            names = iter(
                [param.name for param in params if param.whole and param.field == self.field]
            )
            whole = "/".join(
                piece if piece is not None else f"{{{next(names)}}}" for piece in self.whole
            )
            note = f"Part of `{self.field}`, which is `{whole}`."
            return note + (" It may hold `/`." if self.deep else "")
        notes = []
        if self.name != self.field:
            notes.append(f"Fills `{self.field}`.")
        if self.pattern:
            shape = "/".join(_shape(piece) for piece in self.pattern)
            notes.append(
                f"The value matches `{shape}`: its `/` are part of it, not percent-encoded."
            )
        return " ".join(notes)


def _render(template: _Template, *, expand: bool) -> tuple[str, list[_PathParam]]:
    """The OpenAPI path of a template and its parameters, in order."""
    parts: list[str] = []
    params: list[_PathParam] = []
    for segment in template.segments:
        if isinstance(segment, _Literal):
            parts.append(segment.text)
        elif isinstance(segment, _Wild):
            count = sum(1 for param in params if param.field is None) + 1
            params.append(_PathParam(f"wildcard-{count}", None, deep=segment.deep))
            parts.append(f"{{{params[-1].name}}}")
        elif segment.plain:
            params.append(_PathParam(segment.field, segment.field))
            parts.append(f"{{{segment.field}}}")
        elif not expand:
            params.append(_PathParam(segment.field, segment.field, pattern=segment.pattern))
            parts.append(f"{{{segment.field}}}")
        else:
            whole = tuple(
                piece.text if isinstance(piece, _Literal) else None for piece in segment.pattern
            )
            for piece in segment.pattern:
                if isinstance(piece, _Literal):
                    parts.append(piece.text)
                    continue
                count = sum(1 for param in params if param.field == segment.field) + 1
                params.append(
                    _PathParam(
                        f"{segment.field}-{count}", segment.field, deep=piece.deep, whole=whole
                    )
                )
                parts.append(f"{{{params[-1].name}}}")
    path = "/" + "/".join(parts)
    if template.verb:
        path += f":{template.verb}"
    return path, params


def _shape(piece: _Literal | _Wild) -> str:
    if isinstance(piece, _Literal):
        return piece.text
    return "**" if piece.deep else "*"


def _regex(pattern: tuple[_Literal | _Wild, ...]) -> str:
    """An ECMA-262 regex (what JSON Schema's `pattern` is) for a variable's pattern;
    `**` is last, by HttpRule's grammar."""
    out = ""
    for at, piece in enumerate(pattern):
        sep = "/" if at else ""
        if isinstance(piece, _Literal):
            out += sep + re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", piece.text)
        elif not piece.deep:
            out += sep + "[^/]+"
        elif at:
            out += "(/[^/]+)*"
        else:
            out += "([^/]+(/[^/]+)*)?"
    return f"^{out}$"


_PARAM = re.compile(r"\{([^}]*)\}")


def _normal(path: str) -> str:
    """A path with its parameter names blanked: OpenAPI holds two such paths the same."""
    return _PARAM.sub("{}", path)


_Key = tuple[RpcMethod, int, HttpBinding]
_Placed = dict[_Key, tuple[str, list[_PathParam], str]]


def _place(surface: ApiSurface) -> _Placed:
    """Each binding's OpenAPI path, parameters and method (see the module doc): bindings
    whose paths OpenAPI holds the same are expanded if they share a method, and then
    all take the parameter names of the first of them."""
    parsed: dict[_Key, _Template] = {}
    for method in surface.methods:
        for index, binding in enumerate(method.bindings):
            if binding.verb.lower() not in _METHODS:
                continue
            try:
                parsed[method, index, binding] = _parse(binding.template)
            except ValueError as error:
                raise ValueError(f"{method.full_name}: {error}") from error
    rendered = {key: _render(template, expand=False) for key, template in parsed.items()}
    verbs: dict[str, list[str]] = {}
    for (_, _, binding), (path, _) in rendered.items():
        verbs.setdefault(_normal(path), []).append(binding.verb)
    for key, (path, _) in rendered.items():
        if len(set(verbs[_normal(path)])) < len(verbs[_normal(path)]):
            rendered[key] = _render(parsed[key], expand=True)
    placed: _Placed = {}
    first: dict[str, str] = {}
    seen: dict[tuple[str, str], str] = {}
    for key, (path, params) in rendered.items():
        method, _, binding = key
        canonical = first.setdefault(_normal(path), path)
        if canonical != path:
            names = _PARAM.findall(canonical)
            params = [
                _PathParam(name, p.field, p.deep, p.pattern, p.whole)
                for name, p in zip(names, params, strict=True)
            ]
            path = canonical
        where = f"{method.full_name} ({binding.verb} {binding.template})"
        other = seen.setdefault((_normal(path), binding.verb), where)
        if other is not where:
            raise ValueError(f"{other} and {where} bind the same path")
        placed[key] = (path, params, binding.verb.lower())
    return placed


# --- Operations -----------------------------------------------------------------------


def _operation_names(surface: ApiSurface) -> dict[str, str]:
    """The name of each service in operationIds and tags: its short name, or its full
    one (dots as underscores) where two packages share the short name."""
    services = sorted({method.service for method in surface.methods})
    short = [service.rsplit(".", 1)[-1] for service in services]
    return {
        service: name if short.count(name) == 1 else service.replace(".", "_")
        for service, name in zip(services, short, strict=True)
    }


def _tag(service: str, names: Mapping[str, str], comments: Mapping[str, str]) -> Schema:
    tag: Schema = {"name": names[service]}
    description = _clean(comments.get(service, ""))
    if description:
        tag["description"] = description
    return tag


def _operation(
    schemas: _Schemas,
    method: RpcMethod,
    binding: HttpBinding,
    path_params: list[_PathParam],
    operation_id: str,
    tag: str,
    secured: bool,
) -> Schema:
    comment = _clean(method.comment)
    operation: Schema = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": _summary(comment) or method.name,
    }
    if comment and comment != operation["summary"]:
        operation["description"] = comment
    request = method.input
    parameters = [
        schemas.path_parameter(request, param, path_params, method) for param in path_params
    ]
    bound = {param.field for param in path_params if param.field}
    if binding.body != "*":
        skip = bound | ({binding.body} if binding.body else set())
        parameters += schemas.query_parameters(request, skip)
    if parameters:
        operation["parameters"] = parameters
    if binding.body:
        operation["requestBody"] = schemas.request_body(method, binding, bound)
    operation["responses"] = _responses(schemas, method, binding, secured)
    if secured:
        operation["security"] = [{_BEARER: []}]
    return operation


def _responses(schemas: _Schemas, method: RpcMethod, binding: HttpBinding, secured: bool) -> Schema:
    if binding.response_body:
        field = _top_field(method.output, binding.response_body, method)
        body = schemas.field(field, describe=False)
        what = f"The response's `{binding.response_body}`"
    else:
        body = schemas.message(method.output)
        what = "The response"
    content: Schema
    if method.server_streaming:
        what = (
            f"{what}, for each message of the stream: one JSON object a line "
            '(application/x-ndjson), `{"result": <message>}`, or one per server-sent event '
            "(text/event-stream). An error mid-stream ends it with "
            '`{"error": <Status>}` (the SSE event `error`)'
        )
        frame = {
            "type": "object",
            "properties": {"result": body, "error": {"$ref": _REF + _STATUS}},
            "additionalProperties": False,
        }
        content = {
            "application/x-ndjson": {"schema": frame},
            "text/event-stream": {
                "schema": {
                    "type": "string",
                    "description": "Server-sent events whose `data` is a message as JSON.",
                }
            },
        }
    else:
        what += "."
        content = {"application/json": {"schema": body}}
    responses: Schema = {
        "200": {"description": what, "content": content},
        "default": {
            "description": "An error: a gRPC status mapped to its HTTP status.",
            "content": {"application/json": {"schema": {"$ref": _REF + _STATUS}}},
        },
    }
    if secured:
        responses["401"] = {
            "description": "The bearer token is missing, malformed or expired.",
            "content": {"application/json": {"schema": {"$ref": _REF + _STATUS}}},
        }
    return dict(sorted(responses.items()))


def _top_field(message: Descriptor, name: str, method: RpcMethod) -> FieldDescriptor:
    field = message.fields_by_name.get(name)
    if field is None:
        raise ValueError(f"{method.full_name}: {message.full_name} has no field {name!r}")
    return field


def _clean(comment: str) -> str:
    """A .proto comment without its tool directives (buf:lint:ignore ...)."""
    lines = [
        line for line in comment.splitlines() if not line.startswith(("buf:lint:", "@exclude"))
    ]
    return "\n".join(lines).strip()


def _summary(comment: str) -> str:
    """The first sentence of a comment, on one line."""
    paragraph = " ".join(comment.split("\n\n", 1)[0].split())
    found = re.match(r"(.+?[.!?])(?=\s+[A-Z]|$)", paragraph)
    return found.group(1) if found else paragraph


# --- Schemas --------------------------------------------------------------------------


class _Schemas:
    """Schemas of fields and messages, and the components they refer to."""

    def __init__(self, comments: Mapping[str, str], use_proto_names: bool) -> None:
        self._comments = comments
        self._proto_names = use_proto_names
        self._pending: list[Descriptor | EnumDescriptor] = []
        self._queued: set[str] = set()
        self._oneofs_of: dict[str, list[OneofDescriptor]] = {}

    # Parameters and bodies.

    def path_parameter(
        self,
        request: Descriptor,
        param: _PathParam,
        params: Sequence[_PathParam],
        method: RpcMethod,
    ) -> Schema:
        parameter: Schema = {"name": param.name, "in": "path", "required": True}
        notes = []
        if param.field is None:
            schema: Schema = {"type": "string"}
        else:
            field = self._resolve(request, param.field, method)
            if field.is_repeated or (
                field.message_type is not None and field.message_type.full_name not in _SCALAR_WKTS
            ):
                raise ValueError(
                    f"{method.full_name}: path variable {param.field} is not a scalar field"
                )
            schema = self.query_value(field)
            notes.append(self._comment(field.full_name))
        if param.pattern:
            schema = {**schema, "pattern": _regex(param.pattern)}
        notes.append(param.note(params))
        parameter["schema"] = schema
        description = "\n\n".join(note for note in notes if note)
        if description:
            parameter["description"] = description
        return parameter

    def query_parameters(self, request: Descriptor, skip: set[str]) -> list[Schema]:
        return list(self._query(request, "", "", skip, (request.full_name,)))

    def _query(
        self,
        message: Descriptor,
        path: str,
        name: str,
        skip: set[str],
        stack: tuple[str, ...],
    ) -> Iterator[Schema]:
        for field in message.fields:
            field_path, field_name = path + field.name, name + self._name(field)
            if field_path in skip or _map_entry(field) is not None:
                continue
            kind = field.message_type
            if kind is not None and kind.full_name not in _SCALAR_WKTS:
                if field.is_repeated or kind.full_name in _OBJECT_WKTS:
                    continue
                if kind.full_name in stack or len(stack) >= _QUERY_DEPTH:
                    continue
                yield from self._query(
                    kind, field_path + ".", field_name + ".", skip, (*stack, kind.full_name)
                )
                continue
            value = self.query_value(field)
            parameter: Schema = {"name": field_name, "in": "query"}
            description = self._field_description(field)
            if description:
                parameter["description"] = description
            if field.is_repeated:
                parameter["schema"] = {"type": "array", "items": value}
                parameter["style"] = "form"
                parameter["explode"] = True
            else:
                parameter["schema"] = value
            yield parameter

    def query_value(self, field: FieldDescriptor) -> Schema:
        """The schema of one value of a scalar, enum or scalar-WKT field, inline."""
        if field.enum_type is not None:
            return {"type": "string", "enum": _enum_names(field.enum_type)}
        if field.message_type is not None:
            return dict(_SCALAR_WKTS[field.message_type.full_name])
        return dict(_SCALARS[field.type])

    def request_body(self, method: RpcMethod, binding: HttpBinding, bound: set[str]) -> Schema:
        if binding.body == "*":
            schema = self.message(method.input, frozenset(bound))
            description = ""
            if bound:
                named = ", ".join(f"`{path}`" for path in sorted(bound))
                description = f"The request, without what the path holds ({named})."
        else:
            field = _top_field(method.input, binding.body, method)
            schema = self.field(field, describe=False)
            description = self._comment(field.full_name) or f"The request's `{binding.body}`."
        media = "application/x-ndjson" if method.client_streaming else "application/json"
        if method.client_streaming:
            description = f"{description} Streamed: one JSON message a line.".strip()
        body: Schema = {"required": True, "content": {media: {"schema": schema}}}
        if description:
            body["description"] = description
        return body

    # Fields and messages.

    def field(self, field: FieldDescriptor, *, describe: bool = True) -> Schema:
        """A field's schema in a message: repeated as an array, a map as an object."""
        schema: Schema
        entry = _map_entry(field)
        if entry is not None:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            schema = {"type": "object", "additionalProperties": self.value(value)}
            if key.type == _T.TYPE_BOOL:
                schema["propertyNames"] = {"enum": ["true", "false"]}
            elif key.type != _T.TYPE_STRING:
                schema["propertyNames"] = {"pattern": "^-?[0-9]+$"}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.value(field)}
        else:
            schema = self.value(field)
        description = self._field_description(field) if describe else ""
        if description:
            # A well-known type's own description (its JSON form) goes after the field's.
            form = schema.get("description")
            schema = {**schema, "description": f"{description}\n\n{form}" if form else description}
        return schema

    def value(self, field: FieldDescriptor) -> Schema:
        """The schema of one value of a field (an item of a repeated one)."""
        if field.enum_type is not None:
            if field.enum_type.full_name == "google.protobuf.NullValue":
                return {"type": "null"}
            return self._ref(field.enum_type)
        if field.message_type is not None:
            return self.message(field.message_type)
        return dict(_SCALARS[field.type])

    def message(self, message: Descriptor, exclude: frozenset[str] = frozenset()) -> Schema:
        """A $ref to a message's schema, or the schema inline without the fields (paths
        like "book.name") in `exclude`."""
        name = message.full_name
        if name in _WRAPPERS:
            wrapped = dict(_WRAPPERS[name])
            wrapped["type"] = [wrapped["type"], "null"]
            return wrapped
        if name in _SCALAR_WKTS:
            return dict(_SCALAR_WKTS[name])
        if name in _OBJECT_WKTS:
            return dict(_OBJECT_WKTS[name])
        if not exclude:
            return self._ref(message)
        return self._object(message, exclude)

    def _object(self, message: Descriptor, exclude: frozenset[str] = frozenset()) -> Schema:
        properties: Schema = {}
        for field in message.fields:
            if field.name in exclude:
                continue
            inner = frozenset(
                path.removeprefix(field.name + ".")
                for path in exclude
                if path.startswith(field.name + ".")
            )
            if inner and field.message_type is not None and not field.is_repeated:
                schema = self.message(field.message_type, inner)
                description = self._field_description(field)
                if description:
                    schema = {**schema, "description": description}
            else:
                schema = self.field(field)
            properties[self._name(field)] = schema
        schema = {"type": "object"}
        if properties:
            schema["properties"] = properties
        description = "\n\n".join(
            part for part in (self._comment(message.full_name), self._oneofs(message)) if part
        )
        if description:
            schema["description"] = description
        return schema

    def _oneofs(self, message: Descriptor) -> str:
        notes = []
        for oneof in self._real_oneofs(message):
            members = ", ".join(f"`{self._name(field)}`" for field in oneof.fields)
            notes.append(f"At most one of {members} is set (oneof `{oneof.name}`).")
        return "\n".join(notes)

    def _ref(self, descriptor: Descriptor | EnumDescriptor) -> Schema:
        if descriptor.full_name not in self._queued:
            self._queued.add(descriptor.full_name)
            self._pending.append(descriptor)
        return {"$ref": _REF + descriptor.full_name}

    def finish(self) -> dict[str, Schema]:
        """The schema of every message and enum referred to so far, by full name."""
        components: dict[str, Schema] = {}
        while self._pending:
            descriptor = self._pending.pop()
            if isinstance(descriptor, EnumDescriptor):
                components[descriptor.full_name] = self._enum(descriptor)
            else:
                components[descriptor.full_name] = self._object(descriptor)
        return components

    def _enum(self, enum: EnumDescriptor) -> Schema:
        lines = []
        for value in enum.values:
            comment = " ".join(self._comment(f"{enum.full_name}.{value.name}").split())
            lines.append(f"- `{value.name}` ({value.number})" + (f": {comment}" if comment else ""))
        intro = self._comment(enum.full_name)
        accepted = "The value's name; parsers also accept its number."
        description = "\n\n".join(part for part in (intro, accepted, "\n".join(lines)) if part)
        return {"type": "string", "enum": _enum_names(enum), "description": description}

    # Names and comments.

    def _name(self, field: FieldDescriptor) -> str:
        return field.name if self._proto_names else field.json_name

    def _comment(self, full_name: str) -> str:
        return _clean(self._comments.get(full_name, ""))

    def _field_description(self, field: FieldDescriptor) -> str:
        description = self._comment(field.full_name)
        oneof = field.containing_oneof
        if oneof is not None and oneof.name in self._real_oneofs_names(oneof.containing_type):
            others = [self._name(other) for other in oneof.fields if other is not field]
            note = f"Member of oneof `{oneof.name}`"
            if others:
                note += ": not set with " + ", ".join(f"`{other}`" for other in others)
            description = "\n\n".join(part for part in (description, note + ".") if part)
        return description

    def _real_oneofs(self, message: Descriptor) -> list[OneofDescriptor]:
        """The message's oneofs, without the synthetic ones of proto3 `optional` fields."""
        found = self._oneofs_of.get(message.full_name)
        if found is None:
            proto = descriptor_pb2.DescriptorProto()
            message.CopyToProto(proto)
            synthetic = {field.oneof_index for field in proto.field if field.proto3_optional}
            found = [oneof for at, oneof in enumerate(message.oneofs) if at not in synthetic]
            self._oneofs_of[message.full_name] = found
        return found

    def _real_oneofs_names(self, message: Descriptor) -> set[str]:
        return {oneof.name for oneof in self._real_oneofs(message)}

    def _resolve(self, message: Descriptor, path: str, method: RpcMethod) -> FieldDescriptor:
        field: FieldDescriptor | None = None
        current: Descriptor | None = message
        for name in path.split("."):
            field = current.fields_by_name.get(name) if current is not None else None
            if field is None:
                raise ValueError(f"{method.full_name}: {message.full_name} has no field {path!r}")
            current = field.message_type
        assert field is not None
        return field


def _map_entry(field: FieldDescriptor) -> Descriptor | None:
    """The entry message of a map field, None for other fields."""
    kind = field.message_type
    if field.is_repeated and kind is not None and kind.GetOptions().map_entry:
        return kind
    return None


def _enum_names(enum: EnumDescriptor) -> list[str]:
    return list(dict.fromkeys(value.name for value in enum.values))
