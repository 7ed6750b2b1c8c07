"""Counting things in text."""


def word_count(text: str) -> int:
    return len(text.split())


def char_count(text: str, *, spaces: bool = True) -> int:
    return len(text) if spaces else sum(1 for c in text if not c.isspace())
