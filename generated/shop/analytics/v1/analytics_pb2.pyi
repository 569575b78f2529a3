from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetBusinessMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBusinessMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: BusinessMetrics
    def __init__(self, metrics: _Optional[_Union[BusinessMetrics, _Mapping]] = ...) -> None: ...

class BusinessMetrics(_message.Message):
    __slots__ = ("user_registrations", "payment_successes", "cart_abandonments", "order_values", "orders_not_in_dollars", "events_counted")
    class CartAbandonmentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class OrdersNotInDollarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    USER_REGISTRATIONS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    CART_ABANDONMENTS_FIELD_NUMBER: _ClassVar[int]
    ORDER_VALUES_FIELD_NUMBER: _ClassVar[int]
    ORDERS_NOT_IN_DOLLARS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_COUNTED_FIELD_NUMBER: _ClassVar[int]
    user_registrations: int
    payment_successes: int
    cart_abandonments: _containers.ScalarMap[str, int]
    order_values: OrderValues
    orders_not_in_dollars: _containers.ScalarMap[str, int]
    events_counted: int
    def __init__(self, user_registrations: _Optional[int] = ..., payment_successes: _Optional[int] = ..., cart_abandonments: _Optional[_Mapping[str, int]] = ..., order_values: _Optional[_Union[OrderValues, _Mapping]] = ..., orders_not_in_dollars: _Optional[_Mapping[str, int]] = ..., events_counted: _Optional[int] = ...) -> None: ...

class OrderValues(_message.Message):
    __slots__ = ("buckets", "count", "sum_dollars")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_DOLLARS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[OrderValueBucket]
    count: int
    sum_dollars: float
    def __init__(self, buckets: _Optional[_Iterable[_Union[OrderValueBucket, _Mapping]]] = ..., count: _Optional[int] = ..., sum_dollars: _Optional[float] = ...) -> None: ...

class OrderValueBucket(_message.Message):
    __slots__ = ("upper_bound_dollars", "count")
    UPPER_BOUND_DOLLARS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    upper_bound_dollars: float
    count: int
    def __init__(self, upper_bound_dollars: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...
