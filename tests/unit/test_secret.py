"""Redaction: no piece of a secret survives ``Scrubber``, whatever spelling it comes in.

Property tests draw tokens with characters that every encoding changes and bury pieces of
their spellings, in any letter case, in arbitrary text; ``tests/leaks.py`` says independently
what a leak is.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
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
