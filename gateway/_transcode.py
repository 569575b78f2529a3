"""HTTP request -> gRPC request message, and gRPC response message -> HTTP body, for
one binding: the HttpRule rules of where each field comes from, and the proto3 JSON
mapping (protobuf's json_format, with orjson for the bytes).

A request message is filled in three layers, later ones winning: the body (`body: "*"`
the whole message, `body: "<field>"` that field), then the path's variables, then the
query string, which may name any field neither of the others binds. Values in a path
or query are strings; each is turned into its field's JSON form (a number, a bool, an
enum name) and parsed by the same JSON mapping as a body, so `2024-01-01T00:00:00Z`
fills a Timestamp and `1.5s` a Duration wherever it comes from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from google.protobuf import json_format, message
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway._descriptors import ApiSurface, HttpBinding, RpcMethod
from gateway._errors import EdgeError

__all__ = ["Transcoding"]

_FIELD_MASK = "google.protobuf.FieldMask"
# Message types whose JSON form is a scalar string or number, not an object.
_SCALAR_JSON = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    _FIELD_MASK,
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
}
_BOOL_WRAPPER = "google.protobuf.BoolValue"
_NUMBER_WRAPPERS = {
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
}
_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_INTS32 = (
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32,
)
_INTS64 = (
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
)
_MAX_QUERY_PARAMS = 256
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]{1,100})" at "([^"]{0,200})"')


@dataclass(frozen=True)
class Transcoding:
    """How one HTTP binding of one method maps to and from its messages."""

    method: RpcMethod
    binding: HttpBinding
    request_class: type[message.Message]
    response_class: type[message.Message]
    use_proto_names: bool = False
    _body_field: FieldDescriptor | None = field(default=None, repr=False)
    _response_field: FieldDescriptor | None = field(default=None, repr=False)
    _mask_field: FieldDescriptor | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls,
        surface: ApiSurface,
        method: RpcMethod,
        binding: HttpBinding,
        *,
        use_proto_names: bool = False,
    ) -> Transcoding:
        """Raises ValueError if the binding names a field its messages do not have."""
        body_field = response_field = None
        if binding.body not in ("", "*"):
            body_field = _field(method.input, binding.body, f"{method.full_name} body")
        if binding.response_body:
            response_field = _field(
                method.output, binding.response_body, f"{method.full_name} response_body"
            )
        mask = None
        if binding.verb == "PATCH" and body_field is not None:
            masks = [f for f in method.input.fields if _message_name(f) == _FIELD_MASK]
            mask = masks[0] if len(masks) == 1 and not masks[0].is_repeated else None
        return cls(
            method=method,
            binding=binding,
            request_class=surface.message_class(method.input),
            response_class=surface.message_class(method.output),
            use_proto_names=use_proto_names,
            _body_field=body_field,
            _response_field=response_field,
            _mask_field=mask,
        )

    def request(self, variables: Mapping[str, str], query: str, body: bytes) -> message.Message:
        """The request message of an HTTP request's path variables, query and body.

        Raises:
            EdgeError: INVALID_ARGUMENT naming what is wrong: malformed JSON, an
                unknown field, a value of the wrong type, a body where none is bound.
        """
        request = self.request_class()
        body_json = self._body_json(body)
        if body_json is not None:
            tree = body_json if self._body_field is None else {self._body_field.name: body_json}
            _parse(tree, request, "body")
        overlay: dict[str, Any] = {}
        for path, value in variables.items():
            _assign(overlay, self.method.input, path.split("."), value, f"path variable {path}")
        if query:
            self._query_into(overlay, query)
        body_type = self._body_field.message_type if self._body_field is not None else None
        if (
            self._mask_field is not None
            and body_type is not None
            and isinstance(body_json, dict)
            and self._mask_field.name not in overlay
        ):  # paths relative to the body's field, as grpc-gateway fills them
            overlay[self._mask_field.name] = ",".join(_mask_paths(body_json, body_type))
        if overlay and body_json is None:
            _parse(overlay, request, "request")
        elif overlay:  # over the body: path and query values win
            layer = self.request_class()
            _parse(overlay, layer, "request")
            request.MergeFrom(layer)
        return request

    def response_json(self, response: message.Message) -> bytes:
        """The HTTP body of a response message (its `response_body` field, if bound)."""
        tree = json_format.MessageToDict(response, preserving_proto_field_name=self.use_proto_names)
        if self._response_field is not None:
            key = (
                self._response_field.name
                if self.use_proto_names
                else self._response_field.json_name
            )
            tree = tree.get(key, _empty_json(self._response_field))
        return orjson.dumps(tree)

    def _body_json(self, body: bytes) -> Any:
        if not self.binding.body:
            if body.strip():
                raise EdgeError.bad_request(
                    f"{self.binding.verb} {self.binding.template} takes no body"
                )
            return None
        if not body.strip():
            return None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise EdgeError.bad_request(
                f"malformed JSON body: {error.msg} at byte {error.pos}"
            ) from None

    def _query_into(self, overlay: dict[str, Any], query: str) -> None:
        try:
            pairs = parse_qsl(
                query,
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=_MAX_QUERY_PARAMS,
                errors="strict",
            )
        except (ValueError, UnicodeDecodeError) as error:
            raise EdgeError.bad_request(f"malformed query string: {error}") from None
        bound = {self._body_field.name} if self._body_field is not None else set()
        for name, value in pairs:
            if self.binding.body == "*":
                raise EdgeError.bad_request(
                    f"query parameter {name!r}: every field of the request comes from the body",
                    name,
                )
            steps = _proto_name(self.method.input, name.split("."))
            if steps[0] in bound:
                raise EdgeError.bad_request(f"query parameter {name!r}: set by the body", name)
            _assign(overlay, self.method.input, steps, value, f"query parameter {name}")


def _field(descriptor: Descriptor, path: str, where: str) -> FieldDescriptor:
    found = descriptor.fields_by_name.get(path)
    if found is None:
        raise ValueError(f"{where}: {descriptor.full_name} has no field {path!r}")
    return found


def _message_name(fd: FieldDescriptor) -> str:
    return fd.message_type.full_name if fd.message_type is not None else ""


def _proto_name(descriptor: Descriptor, steps: list[str]) -> list[str]:
    """A dotted path of JSON or proto names, as proto names (unknown steps kept)."""
    names: list[str] = []
    current: Descriptor | None = descriptor
    for step in steps:
        fd = None
        if current is not None:
            fd = _field_named(current, step)
        names.append(fd.name if fd is not None else step)
        current = fd.message_type if fd is not None else None
    return names


def _field_named(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """The field a JSON name or a proto name names, as the JSON mapping accepts both."""
    return _fields_by_either_name(descriptor).get(name)


@functools.cache
def _fields_by_either_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {
        **{fd.json_name: fd for fd in descriptor.fields},
        **{fd.name: fd for fd in descriptor.fields},
    }


def _assign(
    tree: dict[str, Any], descriptor: Descriptor, steps: list[str], raw: str, where: str
) -> None:
    """Set the field at `steps` (proto or JSON names) in a JSON tree to `raw`, converted
    to the field's JSON form; a repeated field collects every value."""
    current = descriptor
    node = tree
    for i, step in enumerate(steps):
        fd = _field_named(current, step)
        if fd is None:
            name = ".".join(steps[: i + 1])
            raise EdgeError.bad_request(f"{where}: {current.full_name} has no field {step!r}", name)
        last = i == len(steps) - 1
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            raise EdgeError.bad_request(f"{where}: map fields cannot be set here", ".".join(steps))
        if not last:
            if (
                fd.message_type is None
                or fd.message_type.full_name in _SCALAR_JSON
                or fd.is_repeated
            ):
                raise EdgeError.bad_request(
                    f"{where}: {fd.name} has no fields", ".".join(steps[: i + 1])
                )
            child = node.setdefault(fd.name, {})
            if not isinstance(child, dict):
                raise EdgeError.bad_request(f"{where}: set twice", ".".join(steps))
            node, current = child, fd.message_type
            continue
        value = _json_value(fd, raw, where, ".".join(steps))
        if fd.is_repeated:
            node.setdefault(fd.name, []).append(value)
        elif fd.name in node:
            raise EdgeError.bad_request(f"{where}: set more than once", ".".join(steps))
        else:
            node[fd.name] = value


def _json_value(fd: FieldDescriptor, raw: str, where: str, name: str) -> Any:
    """A path or query string as the JSON value its field's mapping expects."""
    kind = fd.type
    if fd.message_type is not None:
        full = fd.message_type.full_name
        if full not in _SCALAR_JSON:
            raise EdgeError.bad_request(
                f"{where}: {fd.name} is a message: name one of its fields", name
            )
        if full == _BOOL_WRAPPER:
            return _bool(raw, where, name)
        if full in _NUMBER_WRAPPERS:
            return _number(raw, where, name, integer="Int" in full)
        return raw
    if kind == FieldDescriptor.TYPE_BOOL:
        return _bool(raw, where, name)
    if kind in _FLOATS:
        return _number(raw, where, name, integer=False)
    if kind in _INTS32:
        return _number(raw, where, name, integer=True)
    if kind in _INTS64:
        _number(raw, where, name, integer=True)  # checked here, so the error names it
        return raw  # a string in JSON
    if kind == FieldDescriptor.TYPE_ENUM:
        return int(raw) if raw.lstrip("-").isdigit() else raw
    return raw  # strings, bytes (base64)


def _bool(raw: str, where: str, name: str) -> bool:
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise EdgeError.bad_request(f"{where}: {raw[:40]!r} is not a bool (true or false)", name)


def _number(raw: str, where: str, name: str, *, integer: bool) -> int | float | str:
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        if not integer and raw in ("NaN", "Infinity", "-Infinity"):
            return raw
        kind = "an integer" if integer else "a number"
        raise EdgeError.bad_request(f"{where}: {raw[:40]!r} is not {kind}", name) from None


def _parse(tree: Any, into: message.Message, where: str) -> None:
    try:
        json_format.ParseDict(tree, into, ignore_unknown_fields=False, max_recursion_depth=32)
    except json_format.ParseError as error:
        text = str(error).split("\n", 1)[0]
        unknown = _UNKNOWN_FIELD.search(text)
        if unknown:
            field_name, at = unknown.groups()
            scope = at.partition(".")[2]
            path = f"{scope}.{field_name}" if scope else field_name
            raise EdgeError.bad_request(f"{where}: unknown field {path!r}", path) from None
        raise EdgeError.bad_request(f"{where}: {text}") from None
    except (RecursionError, ValueError, TypeError) as error:
        raise EdgeError.bad_request(f"{where}: {error}") from None


def _mask_paths(body: Mapping[str, Any], descriptor: Descriptor, prefix: str = "") -> list[str]:
    """FieldMask paths of the fields a PATCH body sets, as grpc-gateway fills an unset
    update mask: proto names, nested messages descended into (not maps, nor WKTs)."""
    paths = []
    for key, value in body.items():
        fd = _field_named(descriptor, key)
        name = fd.json_name if fd is not None else key  # FieldMask JSON: camelCase
        full = f"{prefix}{name}"
        nested = (
            fd is not None
            and fd.message_type is not None
            and not fd.is_repeated
            and fd.message_type.full_name not in _SCALAR_JSON
            and not fd.message_type.full_name.startswith("google.protobuf.")
            and isinstance(value, dict)
            and value
        )
        if nested and fd is not None and fd.message_type is not None:
            paths.extend(_mask_paths(value, fd.message_type, f"{full}."))
        else:
            paths.append(full)
    return paths


def _empty_json(fd: FieldDescriptor) -> Any:
    if fd.is_repeated:
        return {} if fd.message_type is not None and fd.message_type.GetOptions().map_entry else []
    if fd.message_type is not None:
        return {}
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return False
    if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return ""
    if fd.enum_type is not None:
        return fd.enum_type.values[0].name
    if fd.type in _FLOATS or fd.type in _INTS32:
        return 0
    return "0"
