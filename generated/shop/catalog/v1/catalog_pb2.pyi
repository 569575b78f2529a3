from google.api import annotations_pb2 as _annotations_pb2
from google.type import money_pb2 as _money_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CatalogItem(_message.Message):
    __slots__ = ("product_id", "name", "description", "price", "available", "in_stock")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    name: str
    description: str
    price: _money_pb2.Money
    available: int
    in_stock: bool
    def __init__(self, product_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., price: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., available: _Optional[int] = ..., in_stock: _Optional[bool] = ...) -> None: ...

class SearchCatalogRequest(_message.Message):
    __slots__ = ("query", "min_price", "max_price", "in_stock_only", "page_size", "page_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    min_price: _money_pb2.Money
    max_price: _money_pb2.Money
    in_stock_only: bool
    page_size: int
    page_token: str
    def __init__(self, query: _Optional[str] = ..., min_price: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., max_price: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., in_stock_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchCatalogResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogItem]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCatalogItemRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    def __init__(self, product_id: _Optional[str] = ...) -> None: ...

class GetCatalogItemResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: CatalogItem
    def __init__(self, item: _Optional[_Union[CatalogItem, _Mapping]] = ...) -> None: ...

class GetProjectionStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetProjectionStatusResponse(_message.Message):
    __slots__ = ("events_behind", "seconds_behind", "events_applied")
    EVENTS_BEHIND_FIELD_NUMBER: _ClassVar[int]
    SECONDS_BEHIND_FIELD_NUMBER: _ClassVar[int]
    EVENTS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    events_behind: int
    seconds_behind: float
    events_applied: int
    def __init__(self, events_behind: _Optional[int] = ..., seconds_behind: _Optional[float] = ..., events_applied: _Optional[int] = ...) -> None: ...

class RebuildProjectionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RebuildProjectionResponse(_message.Message):
    __slots__ = ("events_replayed",)
    EVENTS_REPLAYED_FIELD_NUMBER: _ClassVar[int]
    events_replayed: int
    def __init__(self, events_replayed: _Optional[int] = ...) -> None: ...
