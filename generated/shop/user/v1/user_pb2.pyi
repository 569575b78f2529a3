import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UserStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USER_STATUS_UNSPECIFIED: _ClassVar[UserStatus]
    USER_STATUS_ACTIVE: _ClassVar[UserStatus]
    USER_STATUS_DEACTIVATED: _ClassVar[UserStatus]
USER_STATUS_UNSPECIFIED: UserStatus
USER_STATUS_ACTIVE: UserStatus
USER_STATUS_DEACTIVATED: UserStatus

class User(_message.Message):
    __slots__ = ("user_id", "username", "email", "display_name", "status", "deactivation_reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEACTIVATION_REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    username: str
    email: str
    display_name: str
    status: UserStatus
    deactivation_reason: str
    def __init__(self, user_id: _Optional[str] = ..., username: _Optional[str] = ..., email: _Optional[str] = ..., display_name: _Optional[str] = ..., status: _Optional[_Union[UserStatus, str]] = ..., deactivation_reason: _Optional[str] = ...) -> None: ...

class RegisterUserRequest(_message.Message):
    __slots__ = ("user_id", "username", "email", "display_name")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    username: str
    email: str
    display_name: str
    def __init__(self, user_id: _Optional[str] = ..., username: _Optional[str] = ..., email: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class RegisterUserResponse(_message.Message):
    __slots__ = ("user", "version")
    USER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user: User
    version: int
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("user", "version")
    USER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user: User
    version: int
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ChangeEmailRequest(_message.Message):
    __slots__ = ("user_id", "email", "expected_version")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    email: str
    expected_version: int
    def __init__(self, user_id: _Optional[str] = ..., email: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ChangeEmailResponse(_message.Message):
    __slots__ = ("user", "version")
    USER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user: User
    version: int
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ChangeDisplayNameRequest(_message.Message):
    __slots__ = ("user_id", "display_name", "expected_version")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    display_name: str
    expected_version: int
    def __init__(self, user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ChangeDisplayNameResponse(_message.Message):
    __slots__ = ("user", "version")
    USER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user: User
    version: int
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class DeactivateUserRequest(_message.Message):
    __slots__ = ("user_id", "reason", "expected_version")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    reason: str
    expected_version: int
    def __init__(self, user_id: _Optional[str] = ..., reason: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeactivateUserResponse(_message.Message):
    __slots__ = ("user", "version")
    USER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user: User
    version: int
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ListUserEventsRequest(_message.Message):
    __slots__ = ("user_id", "from_version", "page_size")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    from_version: int
    page_size: int
    def __init__(self, user_id: _Optional[str] = ..., from_version: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListUserEventsResponse(_message.Message):
    __slots__ = ("events", "next_from_version", "version")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[UserEvent]
    next_from_version: int
    version: int
    def __init__(self, events: _Optional[_Iterable[_Union[UserEvent, _Mapping]]] = ..., next_from_version: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class UserEvent(_message.Message):
    __slots__ = ("version", "type", "schema_version", "recorded_at", "data", "event_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    type: str
    schema_version: int
    recorded_at: _timestamp_pb2.Timestamp
    data: _struct_pb2.Struct
    event_id: str
    def __init__(self, version: _Optional[int] = ..., type: _Optional[str] = ..., schema_version: _Optional[int] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...
