"""The payload converter: user values to bytes and back, with msgspec and never pickle."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, get_args

import msgspec
import pytest

from history import Encoding, Payload, PayloadConverter, PayloadDecodeError, PayloadEncodeError

ENCODINGS: tuple[Encoding, ...] = get_args(Encoding)


@dataclasses.dataclass(frozen=True)
class Address:
    street: str
    city: str


@dataclasses.dataclass(frozen=True)
class Customer:
    name: str
    address: Address
    tags: list[str] = dataclasses.field(default_factory=list)


class Order(msgspec.Struct, frozen=True):
    order_id: uuid.UUID
    placed_at: datetime
    amount: Decimal
    lines: tuple[str, ...] = ()


@dataclasses.dataclass
class Shipment:
    when: tuple[datetime, ...]
    ids: list[uuid.UUID]
    labels: dict[str, bytes]
    orders: dict[str, list[Order]]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


ORDER_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
PLACED_AT = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)

# (value, the annotation a workflow or activity would declare for it)
TYPED_VALUES: list[tuple[Any, Any]] = [
    (None, None),
    (True, bool),
    (-(2**62), int),
    (3.25, float),
    ("naïve ☃ text", str),
    (b"\x00\xffbinary", bytes),
    (PLACED_AT, datetime),
    (datetime(2024, 5, 1, 9, tzinfo=timezone(timedelta(hours=-5))), datetime),
    (date(2024, 2, 29), date),
    (timedelta(days=2, microseconds=5), timedelta),
    (ORDER_ID, uuid.UUID),
    (Decimal("12.50"), Decimal),
    (Colour.BLUE, Colour),
    (Customer("Ada", Address("1 Loop Rd", "Turin"), ["vip"]), Customer),
    (Order(ORDER_ID, PLACED_AT, Decimal("9.99"), ("book", "pen")), Order),
    ([1, 2, 3], list[int]),
    ((1, "two", 3.0), tuple[int, str, float]),
    ({"a": [1, 2], "b": []}, dict[str, list[int]]),
    ({1, 2, 3}, set[int]),
    ({"ada": [Customer("Ada", Address("x", "y"))], "bob": []}, dict[str, list[Customer]]),
    (
        Shipment(
            when=(PLACED_AT, PLACED_AT + timedelta(days=1)),
            ids=[ORDER_ID],
            labels={"front": b"\x89PNG", "back": b""},
            orders={"a": [Order(ORDER_ID, PLACED_AT, Decimal("1.5"))]},
        ),
        Shipment,
    ),
    ([Order(ORDER_ID, PLACED_AT, Decimal(1))], list[Order]),
]


def _id(case: tuple[Any, Any]) -> str:
    return type(case[0]).__name__


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("case", TYPED_VALUES, ids=_id)
def test_typed_round_trip_returns_an_equal_value(encoding: Encoding, case: tuple[Any, Any]) -> None:
    value, type_ = case
    converter = PayloadConverter(encoding)

    decoded = converter.decode(converter.encode(value), type_)

    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_payload_records_the_encoding_that_produced_it(encoding: Encoding) -> None:
    assert PayloadConverter(encoding).encode(1).encoding == encoding


def test_json_is_the_default_encoding() -> None:
    payload = PayloadConverter().encode({"a": 1})

    assert payload == Payload("json", b'{"a":1}')


def test_msgpack_payloads_are_smaller_than_json_ones() -> None:
    value = {"numbers": list(range(100)), "when": PLACED_AT}

    json_size = len(PayloadConverter("json").encode(value).data)

    assert len(PayloadConverter("msgpack").encode(value).data) < json_size


@pytest.mark.parametrize(("writer", "reader"), [("json", "msgpack"), ("msgpack", "json")])
def test_a_converter_decodes_a_payload_of_the_other_encoding(
    writer: Encoding, reader: Encoding
) -> None:
    customer = Customer("Ada", Address("1 Loop Rd", "Turin"), ["vip"])
    payload = PayloadConverter(writer).encode(customer)

    assert PayloadConverter(reader).decode(payload, Customer) == customer


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_typed_decode_returns_the_dataclass_not_a_dict(encoding: Encoding) -> None:
    converter = PayloadConverter(encoding)

    decoded = converter.decode(converter.encode(Address("1 Loop Rd", "Turin")), Address)

    assert isinstance(decoded, Address)
    assert decoded.city == "Turin"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_untyped_decode_returns_plain_values(encoding: Encoding) -> None:
    converter = PayloadConverter(encoding)

    decoded = converter.decode(converter.encode(Address("1 Loop Rd", "Turin")))

    assert decoded == {"street": "1 Loop Rd", "city": "Turin"}


def test_decoding_the_same_type_twice_gives_the_same_result() -> None:
    converter = PayloadConverter()
    payload = converter.encode([Address("a", "b")])

    assert converter.decode(payload, list[Address]) == converter.decode(payload, list[Address])


def test_an_unhashable_annotation_still_decodes() -> None:
    annotated = list[Any]
    converter = PayloadConverter()

    assert converter.decode(converter.encode([1, "x"]), annotated) == [1, "x"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_unencodable_value_raises_payload_encode_error_naming_argument_and_type(
    encoding: Encoding,
) -> None:
    class Connection:
        pass

    with pytest.raises(PayloadEncodeError, match=r"argument 'conn' of type .*Connection"):
        PayloadConverter(encoding).encode(Connection(), name="argument 'conn'")


def test_an_unencodable_value_nested_in_a_container_raises_payload_encode_error() -> None:
    with pytest.raises(PayloadEncodeError, match="argument 'items' of type list"):
        PayloadConverter().encode([1, object()], name="argument 'items'")


def test_an_integer_too_large_for_msgpack_raises_payload_encode_error() -> None:
    with pytest.raises(PayloadEncodeError, match="of type int"):
        PayloadConverter("msgpack").encode(2**70)


def test_payload_encode_error_keeps_the_msgspec_error_as_its_cause() -> None:
    with pytest.raises(PayloadEncodeError) as info:
        PayloadConverter().encode(object())

    assert info.value.__cause__ is not None


def test_encode_all_names_the_offending_argument() -> None:
    converter = PayloadConverter()

    with pytest.raises(PayloadEncodeError, match="argument 'b'"):
        converter.encode_all([1, object()], ["argument 'a'", "argument 'b'"])


def test_encode_all_encodes_each_value_in_order() -> None:
    converter = PayloadConverter()

    payloads = converter.encode_all([1, "x"], ["a", "b"])

    assert [converter.decode(p) for p in payloads] == [1, "x"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_decoding_as_the_wrong_type_raises_payload_decode_error(encoding: Encoding) -> None:
    converter = PayloadConverter(encoding)
    payload = converter.encode({"street": "x"})

    with pytest.raises(PayloadDecodeError, match="cannot decode result as Address"):
        converter.decode(payload, Address, name="result")


def test_decoding_a_string_as_an_int_raises_payload_decode_error() -> None:
    converter = PayloadConverter()

    with pytest.raises(PayloadDecodeError, match="Expected `int`, got `str`"):
        converter.decode(converter.encode("42"), int)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_damaged_payload_bytes_raise_payload_decode_error(encoding: Encoding) -> None:
    with pytest.raises(PayloadDecodeError):
        PayloadConverter().decode(Payload(encoding, b"\xc1{not valid"))


def test_an_unknown_payload_encoding_raises_payload_decode_error() -> None:
    with pytest.raises(PayloadDecodeError, match="unknown payload encoding 'pickle'"):
        PayloadConverter().decode(Payload("pickle", b"\x80\x04"))


def test_a_converter_with_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="'pickle'"):
        PayloadConverter("pickle")  # type: ignore[arg-type]
