import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpchat.names import MAX_NICK_LENGTH, nick_error, nick_key, validate_nick
from udpchat.sanitize import safe_nick

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

FULL_WIDTH_BOB = "\uff22\uff4f\uff42"


@pytest.mark.parametrize(
    "nick",
    [
        "a",
        "bob",
        "Zo\u00eb",
        "Zoe\u0308",
        "\u674e\u96f7",
        "\u0410\u043d\u044f",
        "#general",
        "bob/alice",
        "o'brien",
        "\U0001f98a_fox",
        "x" * MAX_NICK_LENGTH,
        FULL_WIDTH_BOB,
    ],
)
def test_valid_nicks(nick: str) -> None:
    assert nick_error(nick) is None
    assert validate_nick(nick) == nick


@pytest.mark.parametrize(
    ("nick", "reason"),
    [
        ("", "at least one character"),
        ("x" * (MAX_NICK_LENGTH + 1), f"at most {MAX_NICK_LENGTH} characters"),
        ("bo b", "whitespace"),
        ("bob\t", "whitespace"),
        ("bob\n", "whitespace"),
        ("bo\u00a0b", "whitespace (U+00A0 NO-BREAK SPACE)"),
        ("\u3000bob", "whitespace"),
        ("bob\u2028", "whitespace"),
        ("bob\x1b[31m", "a control character (U+001B)"),
        ("bob\x9b", "a control character"),
        ("\u202ebob", "an invisible formatting character (U+202E RIGHT-TO-LEFT OVERRIDE)"),
        ("bo\u200bb", "an invisible formatting character"),
        ("\U0001f468\u200d\U0001f469", "an invisible formatting character"),
        ("bob\ufeff", "an invisible formatting character"),
        ("bob\ud800", "a lone surrogate (U+D800)"),
        ("bob\ue000", "a private-use character"),
        ("bob\ufdd0", "an unassigned code point"),
        ("/quit", "cannot start with '/'"),
        ("\u0301bob", "cannot start with a combining mark (U+0301 COMBINING ACUTE ACCENT)"),
    ],
)
def test_invalid_nicks(nick: str, reason: str) -> None:
    error = nick_error(nick)
    assert error is not None
    assert reason in error
    with pytest.raises(ValueError, match="nickname") as raised:
        validate_nick(nick)
    assert str(raised.value) == error


def test_length_counts_code_points_not_bytes() -> None:
    assert nick_error("\u00e9" * MAX_NICK_LENGTH) is None
    assert nick_error("\U0001f98a" * MAX_NICK_LENGTH) is None


def test_non_text_is_refused_without_raising() -> None:
    assert nick_error(b"bob") == "a nickname must be text"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "variants",
    [
        ("Bob", "BOB", "bob", FULL_WIDTH_BOB),
        ("stra\u00dfe", "STRASSE", "Strasse"),
        ("Zo\u00eb", "Zoe\u0308", "ZO\u00cb"),
        ("\ufb01sh", "fish", "FISH"),
        ("\u2160", "I", "i"),
    ],
)
def test_nick_key_collides_case_and_width_variants(variants: tuple[str, ...]) -> None:
    assert len({nick_key(v) for v in variants}) == 1


def test_nick_key_keeps_distinct_names_distinct() -> None:
    assert nick_key("bob") != nick_key("rob")
    assert nick_key("bob") != nick_key("b\u043eb")  # Cyrillic o is another letter


NICKISH = st.text(st.characters(exclude_categories=()), max_size=40)
NO_SURROGATES = st.text(st.characters(exclude_categories=["Cs"]))


@given(NICKISH)
def test_error_is_one_printable_ascii_line(nick: str) -> None:
    error = nick_error(nick)
    if error is not None:
        assert error.isascii()
        assert error.isprintable()


@given(NICKISH)
def test_valid_nicks_display_unchanged(nick: str) -> None:
    if nick_error(nick) is None:
        assert safe_nick(nick) == nick
        assert 1 <= len(nick) <= MAX_NICK_LENGTH


@given(NO_SURROGATES)
def test_nick_key_is_stable(nick: str) -> None:
    key = nick_key(nick)
    assert nick_key(key) == key


@given(NO_SURROGATES)
def test_nick_key_ignores_normalisation_form(nick: str) -> None:
    forms = {unicodedata.normalize(form, nick) for form in ("NFC", "NFD", "NFKC", "NFKD")}
    assert len({nick_key(form) for form in forms}) == 1


def _caseless_key(nick: str) -> str:
    """The Unicode definition nick_key follows (D146, recomposed with NFC), spelled out."""
    folded = unicodedata.normalize("NFD", nick).casefold()
    folded = unicodedata.normalize("NFKD", folded).casefold()
    return unicodedata.normalize("NFKC", folded)


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40))
def test_an_ascii_nick_key_is_the_caseless_key_by_its_short_way(nick: str) -> None:
    assert nick_key(nick) == _caseless_key(nick)


@given(NO_SURROGATES)
def test_nick_key_is_the_unicode_caseless_key(nick: str) -> None:
    assert nick_key(nick) == _caseless_key(nick)
