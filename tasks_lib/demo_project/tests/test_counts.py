import unittest

from textstats import char_count, word_count


class CountsTest(unittest.TestCase):
    def test_word_count(self) -> None:
        self.assertEqual(word_count("the quick  brown fox\n"), 4)
        self.assertEqual(word_count(""), 0)

    def test_char_count(self) -> None:
        self.assertEqual(char_count("a b"), 3)
        self.assertEqual(char_count("a b", spaces=False), 2)


if __name__ == "__main__":
    unittest.main()
