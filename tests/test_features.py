"""Round trips through the data contract: FaceRecord -> Example -> parse_example."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from data import features
from tests import fixtures


class FeaturesTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.named_parameters(
        ('no_face', []),
        ('one_face', [[0.1, 0.2, 0.5, 0.6]]),
        ('many_faces', [[0.0, 0.0, 0.3, 0.2], [0.4, 0.5, 0.9, 0.8], [0.1, 0.7, 0.2, 0.8]]),
        ('face_on_border', [[0.0, 0.8, 0.4, 1.0]]),
    )
    def test_round_trip(self, boxes):
        n = len(boxes)
        record = fixtures.make_face_record(boxes, height=40, width=50, source_id='x/1.jpg')
        record.ignore = np.arange(n) % 2
        record.landmarks_valid = (np.arange(n) + 1) % 2
        serialized = features.to_example(record).SerializeToString()
        parsed = features.parse_example(tf.constant(serialized))
        self.assertEqual(parsed['image'].shape, (40, 50, 3))
        self.assertEqual(int(parsed['height']), 40)
        self.assertEqual(int(parsed['width']), 50)
        self.assertEqual(parsed['source_id'].numpy(), b'x/1.jpg')
        self.assertAllClose(parsed['boxes'], np.reshape(boxes, [-1, 4]))
        self.assertEqual(parsed['boxes'].shape, (n, 4))
        self.assertAllClose(parsed['landmarks'], record.landmarks)
        self.assertAllEqual(parsed['ignore'], record.ignore.astype(bool))
        self.assertAllEqual(parsed['landmarks_valid'], record.landmarks_valid.astype(bool))

    def test_parse_inside_dataset_map_without_decoding(self):
        record = fixtures.make_face_record([[0.1, 0.1, 0.4, 0.4]])
        ds = tf.data.Dataset.from_tensors(features.to_example(record).SerializeToString())
        parsed = next(iter(ds.map(lambda s: features.parse_example(s, decode_image=False))))
        self.assertEqual(parsed['encoded'].numpy(), record.encoded)
        self.assertEqual(parsed['boxes'].shape, (1, 4))

    def test_face_without_landmarks_defaults(self):
        record = features.FaceRecord('id', b'', 10, 10, boxes=[[0.1, 0.1, 0.5, 0.5]])
        self.assertAllEqual(record.landmarks, np.zeros([1, 10]))
        self.assertAllEqual(record.landmarks_valid, [0])
        self.assertAllEqual(record.ignore, [0])


if __name__ == '__main__':
    tf.test.main()
