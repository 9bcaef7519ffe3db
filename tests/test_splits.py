"""Tests for preprocess/splits.py."""

import tensorflow as tf

from preprocess.splits import split_by_hash


class SplitByHashTest(tf.test.TestCase):

    def test_fixed_values(self):
        # sha1-based, so these never change across machines or Python versions.
        names = [f'images/{i}.jpg' for i in range(2000)]
        splits = [split_by_hash(n) for n in names]
        self.assertEqual(splits, [split_by_hash(n) for n in names])
        self.assertBetween(splits.count('val') / len(names), 0.08, 0.12)
        self.assertEqual(set(splits), {'train', 'val'})
        self.assertEqual([split_by_hash(f'images/{i}.jpg', 0.5) for i in range(8)],
                         ['train'] * 5 + ['val'] * 3)

    def test_test_fraction(self):
        splits = [split_by_hash(f'x{i}', 0.2, 0.3) for i in range(2000)]
        self.assertBetween(splits.count('test') / 2000, 0.27, 0.33)
        self.assertBetween(splits.count('val') / 2000, 0.17, 0.23)

    def test_backslashes_normalized(self):
        self.assertEqual(split_by_hash('a\\b.jpg', 0.5), split_by_hash('a/b.jpg', 0.5))

    def test_bad_fractions(self):
        with self.assertRaises(ValueError):
            split_by_hash('x', 0.8, 0.5)


if __name__ == '__main__':
    tf.test.main()
