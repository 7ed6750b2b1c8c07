"""Small text statistics: the tgflow demo project."""

from textstats.counts import char_count, word_count

__all__ = ["char_count", "word_count"]

# Features add their public names below, one block each.
