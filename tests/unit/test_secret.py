"""Redaction: no piece of a secret survives ``Scrubber``, whatever spelling it comes in.

Property tests draw tokens with characters that every encoding changes and bury pieces of
their spellings, in any letter case, in arbitrary text; ``tests/leaks.py`` says independently
what a leak is.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from hypothesis import assume, given
from hypothesis import strategies as st

from syncd.secret import REDACTED, Scrubber, Secret
from tests.leaks import ENCODED_TOKEN, leaked, spellings

# Printable characters, with the ones that URL-encoding changes drawn often. No "*": the
# marker is "***", and a token made of stars could line up with the marker itself.
TOKEN_CHARS = st.one_of(
    st.sampled_from("/+=&% ?#'\"\\<>;:@üé€Ж😀"),
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="*"),
)
TOKENS = st.text(TOKEN_CHARS, min_size=1, max_size=40)
CASES: st.SearchStrategy[Callable[[str], str]] = st.sampled_from(
    [str, str.upper, str.lower, str.swapcase]
)


def scrub(text: str, token: str) -> str:
    return Scrubber([Secret(token)]).scrub(text)


@st.composite
def echoes(draw: st.DrawFn, token: str) -> str:
    """Text around a piece of one spelling of ``token`` (8 characters or more, or a whole
    short spelling), in some letter case; sometimes several pieces."""
    parts = [draw(st.text())]
    for _ in range(draw(st.integers(1, 3))):
        spelling = draw(st.sampled_from(sorted(spellings(token))))
        start = draw(st.integers(0, max(0, len(spelling) - 8)))
        end = draw(st.integers(min(len(spelling), start + 8), len(spelling)))
        parts += [draw(CASES)(spelling[start:end]), draw(st.text())]
    return "".join(parts)


@given(st.data(), TOKENS)
def test_no_piece_of_any_spelling_survives(data: st.DataObject, token: str) -> None:
    text = data.draw(echoes(token))
    assert leaked(scrub(text, token), token) == []


@given(st.data(), TOKENS, st.lists(st.text(), min_size=1, max_size=4))
def test_texts_joined_holding_none_means_each_holds_none(
    data: st.DataObject, token: str, texts: list[str]
) -> None:
    """A package's texts are looked at once, joined: when the join holds no piece, no
    text may hold one (none is left unscrubbed)."""
    if data.draw(st.booleans()):
        texts[data.draw(st.integers(0, len(texts) - 1))] = data.draw(echoes(token))
    scrubber = Scrubber([Secret(token)])
    if scrubber.holds_none("\n".join(texts)):
        assert all(scrubber.scrub(text) == text for text in texts)
        assert all(leaked(text, token) == [] for text in texts)


@given(TOKENS, st.text())
def test_a_whole_spelling_in_any_text_is_hidden(token: str, around: str) -> None:
    for spelling in spellings(token):
        assert leaked(scrub(f"{around}{spelling}{around}", token), token) == []


def test_a_quoted_start_of_the_token_is_hidden() -> None:
    text = f"Invalid API key {ENCODED_TOKEN[:12]}..."
    assert scrub(text, ENCODED_TOKEN) == f"Invalid API key {REDACTED}..."


def test_percent_escapes_in_either_case_are_one_span() -> None:
    body = "api_token=SECRET%2fq7%2bLr9%3DXw%26P4+mTz%25%c3%bc%C3%A9&action=balance"
    assert scrub(body, ENCODED_TOKEN) == f"api_token={REDACTED}&action=balance"


def test_a_short_token_is_hidden_whole() -> None:
    assert (
        scrub("key=a/b1 or a%2Fb1 but not a/b", "a/b1")
        == f"key={REDACTED} or {REDACTED} but not a/b"
    )


def test_text_without_a_secret_is_unchanged() -> None:
    text = "HTTP 400 (Bad request: link is not a URL) \x1b[2J ü"
    assert scrub(text, ENCODED_TOKEN) == text
    assert not Scrubber([]) and Scrubber([]).scrub(text) == text
    assert not Scrubber([Secret("")])


def test_several_secrets_at_once() -> None:
    other = "whsec_c2VjcmV0LXdlYmhvb2sta2V5"
    scrubber = Scrubber([Secret(ENCODED_TOKEN), Secret(other)])
    text = f"{ENCODED_TOKEN} and {other[:9]}"
    assert scrubber.scrub(text) == f"{REDACTED} and {REDACTED}"


# -- a token whose characters are escaped one by one, as no form encoder would ---------------

SPELLINGS: dict[str, Callable[[str], str]] = {
    "plain": lambda c: c,
    "upper": lambda c: "".join(f"%{b:02X}" for b in c.encode()),
    "lower": lambda c: "".join(f"%{b:02x}" for b in c.encode()),
    "plus": lambda c: "+" if c == " " else c,
}


@st.composite
def escaped_pieces(draw: st.DrawFn, token: str) -> list[str]:
    """A piece of ``token`` of 8 characters or more (all of a shorter one), each character
    written as itself or as its %XX escapes, upper or lower case (a space also as +): one
    string per character."""
    start = draw(st.integers(0, max(0, len(token) - 8)))
    end = draw(st.integers(min(len(token), start + 8), len(token)))
    return [SPELLINGS[draw(st.sampled_from(sorted(SPELLINGS)))](c) for c in token[start:end]]


@given(st.data(), TOKENS, st.text(), st.text())
def test_no_piece_escaped_character_by_character_survives(
    data: st.DataObject, token: str, before: str, after: str
) -> None:
    spelled = data.draw(escaped_pieces(token))
    scrubbed = scrub(before + "".join(spelled) + after, token)
    size = min(8, len(spelled))
    shown = ["".join(spelled[i : i + size]) for i in range(len(spelled) - size + 1)]
    assert [piece for piece in shown if piece in scrubbed] == []


@given(TOKENS, st.data())
def test_text_without_the_token_is_unchanged(token: str, data: st.DataObject) -> None:
    """Text made of characters the token does not hold, and that no escape begins with,
    holds no spelling of it: it is left as it is."""
    excluded = set("%+\\&").union(*({c, *c.casefold(), *c.lower()} for c in token))
    text = data.draw(st.text())
    kept = "".join(
        c for c in text if not excluded & {*c.casefold(), *c.lower(), *c.upper().casefold()}
    )
    encoded = token.encode("utf-8", "surrogatepass")
    assume(not any(b64(encoded).decode()[:8] in kept for b64 in B64))
    assert scrub(kept, token) == kept


B64 = (base64.b64encode, base64.urlsafe_b64encode)


def test_a_token_echoed_with_escapes_no_form_encoder_uses_is_hidden() -> None:
    reply = '{"error":"key=sim%2Dtoken%2DSECRET123 rejected"}'
    assert scrub(reply, "sim-token-SECRET123") == f'{{"error":"key={REDACTED} rejected"}}'
    assert scrub("key=%73im-tok%65n rejected", "sim-token-SECRET123") == f"key={REDACTED} rejected"


def test_the_token_in_base64_is_hidden() -> None:
    token = "sim-token-SECRET123/+?"
    for b64 in B64:
        whole = b64(token.encode()).decode()
        for shown in (whole, whole.rstrip("=")):
            assert REDACTED in scrub(f"auth {shown} refused", token)
            assert leaked(scrub(f"auth {shown} refused", token), whole) == []
        # After other bytes (user:token), whatever their number.
        for user in ("u", "us", "use"):
            basic = b64(f"{user}:{token}".encode()).decode()
            scrubbed = scrub(f"Authorization: Basic {basic}", token)
            assert len(scrubbed) < len("Authorization: Basic ") + len(basic) - 20, scrubbed


def test_a_space_written_as_a_plus_beside_characters_left_as_they_are_is_hidden() -> None:
    """No form encoder writes this (it would escape the é): the only escape is the +."""
    assert scrub("t=ab+cdéfgh!", "ab cdéfgh") == f"t={REDACTED}!"
    assert scrub("t=ab+cd%C3%A9fgh!", "ab cdéfgh") == f"t={REDACTED}!"


def test_the_token_in_hex_is_hidden_whole_and_by_the_piece() -> None:
    token = "sim-token-SECRET123"
    digits = token.encode().hex()
    for shown in (digits, digits.upper()):
        scrubbed = scrub(f"invalid key: {shown}", token)
        assert scrubbed.startswith("invalid key: ") and leaked(scrubbed, digits) == []
    # Eight of its bytes, quoted alone: a piece as telling as eight of its characters.
    piece = token[5:13].encode().hex()
    assert scrub(f"key {piece}...", token) == f"key {REDACTED}..."
