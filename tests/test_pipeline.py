"""The training pipeline passes its settings through to the crops and targets."""

import tempfile

import numpy as np
import tensorflow as tf

from data import pipeline
from tests import fixtures

# One 6 px face (at the 64 px training size, the whole square image kept) centred on a
# stride-8 point, so the assignment can give it a positive.
SMALL_FACE = [[0.265625, 0.265625, 0.359375, 0.359375]]


class PipelineTest(tf.test.TestCase):

    def _first_batch(self, min_face_px):
        directory = tempfile.mkdtemp(dir=self.get_temp_dir())
        fixtures.write_tiny_shards(directory, [fixtures.make_face_record(
            SMALL_FACE, height=128, width=128)], num_shards=1)
        ds = pipeline.build_dataset(f'{directory}/train-*', 1, 64, True, shuffle_buffer=1,
                                    scale_range=(1.0, 1.0), min_face_px=min_face_px)
        return next(iter(ds))

    def test_train_min_face_turns_small_faces_into_ignore(self):
        kept = self._first_batch(min_face_px=4.0)
        self.assertFalse(kept['ignore'].numpy()[0, 0])
        self.assertGreater(int(np.sum(kept['targets']['positive'].numpy())), 0)

        ignored = self._first_batch(min_face_px=8.0)
        self.assertTrue(ignored['ignore'].numpy()[0, 0])
        self.assertEqual(int(np.sum(ignored['targets']['positive'].numpy())), 0)
        # Neither face nor background: the points on it carry no classification loss.
        self.assertLess(float(np.sum(ignored['targets']['cls_weight'].numpy())),
                        float(np.sum(kept['targets']['cls_weight'].numpy())))
