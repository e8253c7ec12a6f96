"""What an SMS text costs: its encoding, length and number of segments (3GPP TS 23.038).

A text made only of the GSM 7-bit default alphabet (plus its extension table) travels as
GSM-7: 160 septets in one message, 153 per segment once it is concatenated (the user data
header takes the rest). An extension character (``€ [ ] { } \\ ^ ~ |`` and form feed) is an
escape septet plus its own, so it counts twice, and the pair never straddles two segments.
One character outside both tables makes the whole text UCS-2: 70 UTF-16 code units in one
message, 67 per segment; a character outside the Basic Multilingual Plane (most emoji) is a
surrogate pair, two code units, which is not split across segments either.

Pure functions, no I/O: the template preview and the tests use them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Encoding = Literal["GSM-7", "UCS-2"]

# TS 23.038 §6.2.1: the default alphabet, in code order (0x1B, the escape, is not a
# character of its own and is left out).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# TS 23.038 §6.2.1.1: the default extension table, each sent as ESC + one septet.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE = {"GSM-7": 160, "UCS-2": 70}  # units in a message sent alone
CONCATENATED = {"GSM-7": 153, "UCS-2": 67}  # units per segment of a concatenated message


@dataclass(frozen=True)
class SmsCost:
    """``length`` counts what the limits count: septets for GSM-7 (an extension character
    twice), UTF-16 code units for UCS-2 (an emoji twice); ``characters`` counts code points."""

    encoding: Encoding
    characters: int
    length: int
    segments: int
    per_segment: int
    remaining: int  # units still free in the last segment
    not_gsm7: tuple[str, ...] = ()  # the characters that made the text UCS-2 (first few)

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["not_gsm7"] = list(self.not_gsm7)
        return body


def is_gsm7(text: str) -> bool:
    """Whether every character is in the default alphabet or its extension table."""
    return all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)


def encoding_of(text: str) -> Encoding:
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def unit_costs(text: str, encoding: Encoding) -> list[int]:
    """Each character's size in units of ``encoding``: 1, or 2 for an extension character
    (GSM-7) or a character beyond U+FFFF (UCS-2, a surrogate pair)."""
    if encoding == "GSM-7":
        return [2 if c in GSM7_EXTENSION else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def split_units(costs: list[int], per_segment: int) -> list[int]:
    """Segment sizes when characters of the given costs are packed in order, a character
    never split between two segments (an escape pair, a surrogate pair)."""
    sizes: list[int] = []
    current = 0
    for cost in costs:
        if current + cost > per_segment:
            sizes.append(current)
            current = 0
        current += cost
    if current or not sizes:
        sizes.append(current)
    return sizes


def sms_cost(text: str) -> SmsCost:
    """The encoding, length and segment count of ``text`` as one SMS (concatenated if long)."""
    encoding = encoding_of(text)
    costs = unit_costs(text, encoding)
    length = sum(costs)
    if length <= SINGLE[encoding]:
        per_segment, sizes = SINGLE[encoding], [length]
    else:
        per_segment = CONCATENATED[encoding]
        sizes = split_units(costs, per_segment)
    offending = tuple(dict.fromkeys(c for c in text if not is_gsm7(c)))[:10]
    return SmsCost(encoding=encoding, characters=len(text), length=length,
                   segments=len(sizes), per_segment=per_segment,
                   remaining=per_segment - sizes[-1], not_gsm7=offending)
