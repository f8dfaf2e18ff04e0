"""Token counts: the ASCII fast path counts exactly what the regular expression counts."""

from __future__ import annotations

import random
import re

import pytest

from gateway.tokens import _CLASSES, _TOKEN, count_text_tokens


def by_expression(text: str) -> int:
    return len(_TOKEN.findall(text))


def test_every_ascii_character_has_the_expressions_class():
    for code in range(128):
        character = chr(code)
        expected = "a" if re.fullmatch(r"\w", character) else " " if re.fullmatch(r"\s", character) else "."
        assert chr(_CLASSES[code]) == expected, code


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("a", 1), (" ", 0), (".", 1), ("a.", 2), (".a", 2), ("a a", 2), ("hello, world!", 4)],
)
def test_known_counts(text, tokens):
    assert count_text_tokens(text) == tokens == by_expression(text)


def test_random_ascii_strings_count_as_the_expression_does():
    rng = random.Random(20261201)  # noqa: S311 - test data, reproducible
    alphabet = [chr(code) for code in range(128)]
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert count_text_tokens(text) == by_expression(text), repr(text)


def test_text_beyond_ascii_goes_through_the_expression():
    for text in ["café crème", "naïve—text", "日本語のテキスト。", "emoji 🙂 here"]:
        assert count_text_tokens(text) == by_expression(text)
