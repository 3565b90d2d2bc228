"""The payload converter: user values to bytes and back, with msgspec, never pickle.

A history may be read by another process, another version of the code, or an operator's
laptop, so every value is stored in a self-describing, language-neutral encoding. JSON is the
default because an exported history stays readable; MessagePack is smaller and faster. Each
payload records its encoding, so a converter decodes both whatever its own default is.

Supported: everything msgspec supports natively — None, bool, int, float, str, bytes, lists,
tuples, dicts, sets, datetimes, dates, times, timedeltas, UUIDs, Decimals, enums,
dataclasses, attrs classes, TypedDicts, NamedTuples and msgspec Structs. Decoding is typed:
given the parameter's or return value's annotation, a dataclass comes back as that dataclass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import msgspec

from ._errors import PayloadDecodeError, PayloadEncodeError
from ._events import Payload

__all__ = ["Encoding", "PayloadConverter"]

Encoding = Literal["json", "msgpack"]

_ENCODERS: Final[dict[str, msgspec.json.Encoder | msgspec.msgpack.Encoder]] = {
    "json": msgspec.json.Encoder(),
    "msgpack": msgspec.msgpack.Encoder(),
}


class PayloadConverter:
    """Encodes values into :class:`Payload` and decodes them back into a requested type."""

    def __init__(self, encoding: Encoding = "json") -> None:
        if encoding not in _ENCODERS:
            raise ValueError(f"unknown payload encoding {encoding!r}; use 'json' or 'msgpack'")
        self.encoding: Encoding = encoding
        self._encoder = _ENCODERS[encoding]
        self._decoders: dict[tuple[str, Any], Any] = {}

    def encode(self, value: Any, *, name: str = "value") -> Payload:
        """Encode one value; ``name`` says what it is (``"argument 'amount'"``) in errors."""
        try:
            return Payload(self.encoding, self._encoder.encode(value))
        except (TypeError, msgspec.EncodeError, OverflowError, ValueError) as exc:
            raise PayloadEncodeError(
                f"cannot encode {name} of type {type(value).__qualname__}: {exc}. "
                "Payloads must be msgspec-encodable (primitives, containers, dataclasses, "
                "msgspec Structs, datetimes, UUIDs, bytes); pickle is never used."
            ) from exc

    def encode_all(
        self, values: Sequence[Any], names: Sequence[str] | Callable[[int], str]
    ) -> tuple[Payload, ...]:
        """Encode several values; ``names`` (or a function of the index giving each name) is
        only consulted to word the error when one cannot be encoded."""
        encoding, encode = self.encoding, self._encoder.encode
        try:
            return tuple([Payload(encoding, encode(value)) for value in values])
        except (TypeError, msgspec.EncodeError, OverflowError, ValueError):
            pass
        for index, value in enumerate(values):
            name = names(index) if callable(names) else names[index]
            self.encode(value, name=name)  # raises PayloadEncodeError naming this one
        raise AssertionError("unreachable: a value failed to encode only once")

    def decode(self, payload: Payload, type_: Any = Any, *, name: str = "value") -> Any:
        """Decode ``payload`` as ``type_`` (``Any`` gives plain JSON-like values)."""
        try:
            decoder = self._decoder(payload.encoding, type_)
        except KeyError:
            raise PayloadDecodeError(
                f"cannot decode {name}: unknown payload encoding {payload.encoding!r}"
            ) from None
        try:
            return decoder.decode(payload.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PayloadDecodeError(f"cannot decode {name} as {_type_name(type_)}: {exc}") from exc

    def _decoder(self, encoding: str, type_: Any) -> Any:
        key = (encoding, type_)
        try:
            return self._decoders[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable annotation: build a decoder each time
            return _new_decoder(encoding, type_)
        decoder = self._decoders[key] = _new_decoder(encoding, type_)
        return decoder


def _new_decoder(encoding: str, type_: Any) -> Any:
    if encoding == "json":
        return msgspec.json.Decoder(type_)
    if encoding == "msgpack":
        return msgspec.msgpack.Decoder(type_)
    raise KeyError(encoding)


def _type_name(type_: Any) -> str:
    return getattr(type_, "__qualname__", None) or repr(type_)
