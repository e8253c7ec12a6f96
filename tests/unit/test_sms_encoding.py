"""SMS encoding and segment counts on the edges of 3GPP TS 23.038 and concatenation."""

from __future__ import annotations

import pytest

from shared.sms_encoding import GSM7_BASIC, GSM7_EXTENSION, encoding_of, sms_cost, split_units


def test_the_tables_have_the_standard_sizes() -> None:
    assert len(GSM7_BASIC) == 127  # 128 code points, the escape not a character
    assert GSM7_EXTENSION == frozenset("\f^{}\\[~]|€")
    assert not GSM7_BASIC & GSM7_EXTENSION


@pytest.mark.parametrize(("length", "segments"), [
    (1, 1), (160, 1), (161, 2), (153 * 2, 2), (153 * 2 + 1, 3), (153 * 3, 3), (459 + 1, 4)])
def test_gsm7_segment_limits(length: int, segments: int) -> None:
    cost = sms_cost("a" * length)
    assert (cost.encoding, cost.length, cost.segments) == ("GSM-7", length, segments)


def test_160_is_one_message_161_needs_the_header() -> None:
    assert sms_cost("x" * 160).per_segment == 160
    assert sms_cost("x" * 160).remaining == 0
    long = sms_cost("x" * 161)
    assert (long.per_segment, long.remaining) == (153, 153 * 2 - 161)


def test_extension_characters_count_twice() -> None:
    cost = sms_cost("€" * 80)
    assert (cost.encoding, cost.characters, cost.length, cost.segments) == ("GSM-7", 80, 160, 1)
    over = sms_cost("€" * 80 + "a")
    assert (over.length, over.segments) == (161, 2)


def test_154_extension_characters() -> None:
    cost = sms_cost("{" * 154)  # 308 septets; 76 pairs fit in 153, so 3 segments
    assert (cost.length, cost.segments) == (308, 3)


def test_an_escape_pair_is_not_split_at_a_segment_boundary() -> None:
    # 152 plain septets, then "€": the pair would take septets 153 and 154, so it moves
    # to the second segment, and 153 + 152 more plain ones then need a third.
    text = "a" * 152 + "€" + "a" * 152
    cost = sms_cost(text)
    assert cost.length == 306  # 2 * 153 septets would fit if the pair could be split
    assert cost.segments == 3
    assert split_units([1] * 152 + [2] + [1] * 152, 153) == [152, 153, 1]


def test_an_escape_pair_that_ends_a_segment_exactly_fits() -> None:
    text = "a" * 151 + "€" + "a" * 153  # 153 + 153 septets
    assert sms_cost(text).segments == 2


def test_every_basic_and_extension_character_stays_gsm7() -> None:
    text = "".join(sorted(GSM7_BASIC | GSM7_EXTENSION))
    assert encoding_of(text) == "GSM-7"


@pytest.mark.parametrize("char", ["ç", "á", "ł", "“", "’", "\t", "ő", "😀", "中"])
def test_one_character_outside_the_tables_makes_it_ucs2(char: str) -> None:
    cost = sms_cost("a" * 100 + char)
    assert cost.encoding == "UCS-2"
    assert cost.not_gsm7 == (char,)
    assert cost.segments == 2  # 101+ code units > 70


def test_accented_letters_of_the_default_alphabet_stay_gsm7() -> None:
    assert encoding_of("Ça, é è ù ì ò à Ä Ö Ñ Ü ä ö ñ ü ß Æ ø å É") == "GSM-7"


@pytest.mark.parametrize(("length", "segments"), [
    (70, 1), (71, 2), (134, 2), (135, 3), (67 * 3, 3), (202, 4)])
def test_ucs2_segment_limits(length: int, segments: int) -> None:
    cost = sms_cost("ж" * length)
    assert (cost.encoding, cost.length, cost.segments) == ("UCS-2", length, segments)


def test_an_emoji_is_two_code_units() -> None:
    cost = sms_cost("😀" * 35)
    assert (cost.characters, cost.length, cost.segments) == (35, 70, 1)
    assert sms_cost("😀" * 35 + "a").segments == 2


def test_a_surrogate_pair_is_not_split_at_a_segment_boundary() -> None:
    text = "ж" * 66 + "😀" + "ж" * 66  # 134 code units: the pair would straddle 67/68
    cost = sms_cost(text)
    assert cost.length == 134
    assert cost.segments == 3
    assert sms_cost("ж" * 65 + "😀" + "ж" * 67).segments == 2  # ends segment one exactly


def test_empty_text_is_one_empty_segment() -> None:
    cost = sms_cost("")
    assert (cost.encoding, cost.length, cost.segments, cost.remaining) == ("GSM-7", 0, 1, 160)


def test_as_dict_is_json_ready() -> None:
    body = sms_cost("Hé 😀").as_dict()
    assert body == {"encoding": "UCS-2", "characters": 4, "length": 5, "segments": 1,
                    "per_segment": 70, "remaining": 65, "not_gsm7": ["😀"]}
