"""`python -m bench.edge_json`: the JSON candidates of the edge rows, orjson (what the
edge uses) against the stdlib's json, on the shop's own messages, in one process.

Each case is one step of the edge's hot path as gateway._transcode does it:
- encode (a response): `json_format.MessageToDict` of the message, then
  `orjson.dumps(tree)` or `json.dumps(tree, separators=(",", ":"),
  ensure_ascii=False).encode()` (the same bytes: compact, UTF-8);
- decode (a request body): `orjson.loads(body)` or `json.loads(body)`, then
  `json_format.ParseDict` into a new message.
over GetProductResponse (one product), ListProductsResponse (a default page of 50)
and PlaceOrderRequest (3 items), each built as the edge's own dynamic classes from
generated/shop.binpb parse it. Every variant of a case is timed in turn, in REPEATS
rounds of about equal length, and the fastest round counts (the least disturbed:
the machine's noise only ever adds). Prints a JSON list of bench.summary.JsonCaseJson.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from google.protobuf import json_format, message

from bench.summary import JsonCaseJson

__all__ = ["MESSAGES", "REPEATS", "json_case", "main", "per_call_us", "stdlib_dumps"]

REPO = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = REPO / "generated" / "shop.binpb"
REPEATS = 5
LIST_PAGE = 50  # ListProducts' default page size
MESSAGES = (
    "shop.product.v1.GetProductResponse",
    "shop.product.v1.ListProductsResponse",
    "shop.order.v1.PlaceOrderRequest",
)


def stdlib_dumps(tree: Any) -> bytes:
    """The stdlib's json giving orjson.dumps' bytes: compact, non-ASCII as UTF-8."""
    return json.dumps(tree, separators=(",", ":"), ensure_ascii=False).encode()


def per_call_us(
    variants: Sequence[Callable[[], object]], budget: float, repeats: int = REPEATS
) -> list[float]:
    """Microseconds per call of each variant: the fastest of `repeats` rounds, each
    variant timed in turn within a round, the whole taking about `budget` seconds."""
    loops = []
    for variant in variants:  # calibrate: enough calls for a round of the budget's share
        n, took = 1, 0.0
        while took < 0.005:
            n *= 2
            started = time.perf_counter()
            for _ in range(n):
                variant()
            took = time.perf_counter() - started
        share = budget / repeats / len(variants)
        loops.append(max(1, int(n * share / took)))
    best = [float("inf")] * len(variants)
    for _ in range(repeats):
        for i, (variant, n) in enumerate(zip(variants, loops, strict=True)):
            started = time.perf_counter()
            for _ in range(n):
                variant()
            best[i] = min(best[i], (time.perf_counter() - started) / n * 1e6)
    return best


def json_case(
    message_name: str,
    direction: str,
    json_bytes: int,
    timings: Sequence[float],
    same_result: bool,
) -> JsonCaseJson:
    """A case's figures from its five timings (us): json_format plus orjson, json_format
    plus json, json_format alone, orjson alone, json alone."""
    with_orjson, with_stdlib, json_format_us, orjson_alone, stdlib_alone = timings
    return {
        "message": message_name,
        "direction": direction,
        "json_bytes": json_bytes,
        "orjson_us": with_orjson,
        "stdlib_us": with_stdlib,
        "json_format_us": json_format_us,
        "orjson_alone_us": orjson_alone,
        "stdlib_alone_us": stdlib_alone,
        "speedup": with_stdlib / with_orjson if with_orjson > 0 else float("nan"),
        "speedup_alone": stdlib_alone / orjson_alone if orjson_alone > 0 else float("nan"),
        "same_result": same_result,
    }


def _messages() -> dict[str, message.Message]:
    """The shop's messages as the edge's classes (from the descriptor set) hold them."""
    from shop.order.v1 import order_pb2
    from shop.product.v1 import product_pb2

    from bench.product_server import seed_product
    from gateway._descriptors import load_descriptor_set
    from services.product.domain import encode_page_token
    from services.product.servicer import encode_product

    surface = load_descriptor_set(DESCRIPTOR_SET)
    generated: dict[str, message.Message] = {
        MESSAGES[0]: product_pb2.GetProductResponse(
            product=encode_product(seed_product(1)), served_by_version="v1"
        ),
        MESSAGES[1]: product_pb2.ListProductsResponse(
            products=[encode_product(seed_product(n)) for n in range(1, LIST_PAGE + 1)],
            next_page_token=encode_page_token(f"sku-{LIST_PAGE}"),
        ),
        MESSAGES[2]: order_pb2.PlaceOrderRequest(
            customer_id="alice@example.com",
            items=[order_pb2.OrderItem(product_id=f"sku-{n}", quantity=n) for n in (1, 2, 3)],
            request_id="5f0c6a8e-2b1d-4c3e-9a7f-0d1e2f3a4b5c",
        ),
    }
    edge_classes = {}
    for name, generated_message in generated.items():
        cls = surface.message_class(surface.pool.FindMessageTypeByName(name))
        edge_classes[name] = cls.FromString(generated_message.SerializeToString())
    return edge_classes


def _encode_case(name: str, answer: message.Message, budget: float) -> JsonCaseJson:
    def tree() -> dict[str, Any]:
        return json_format.MessageToDict(answer)

    ready = tree()
    timings = per_call_us(
        [
            lambda: orjson.dumps(tree()),
            lambda: stdlib_dumps(tree()),
            tree,
            lambda: orjson.dumps(ready),
            lambda: stdlib_dumps(ready),
        ],
        budget,
    )
    body = orjson.dumps(ready)
    return json_case(name, "encode", len(body), timings, body == stdlib_dumps(ready))


def _decode_case(name: str, sample: message.Message, budget: float) -> JsonCaseJson:
    body = orjson.dumps(json_format.MessageToDict(sample))
    cls = type(sample)
    tree = orjson.loads(body)

    def parse(loaded: Any) -> message.Message:
        into = cls()
        json_format.ParseDict(loaded, into, ignore_unknown_fields=False, max_recursion_depth=32)
        return into

    timings = per_call_us(
        [
            lambda: parse(orjson.loads(body)),
            lambda: parse(json.loads(body)),
            lambda: parse(tree),
            lambda: orjson.loads(body),
            lambda: json.loads(body),
        ],
        budget,
    )
    same = parse(orjson.loads(body)) == parse(json.loads(body)) == sample
    return json_case(name, "decode", len(body), timings, same)


def measure(budget: float) -> list[JsonCaseJson]:
    """Every message both ways, `budget` seconds in all."""
    messages = _messages()
    share = budget / (2 * len(messages))
    cases = []
    for name, sample in messages.items():
        cases.append(_encode_case(name, sample, share))
        cases.append(_decode_case(name, sample, share))
    return cases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_json", description=__doc__)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds in all")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(json.dumps(measure(args.budget)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
