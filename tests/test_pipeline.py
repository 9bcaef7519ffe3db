"""The training pipeline passes its settings through to the crops, and its batches give
the targets the train step assigns."""

import tempfile

import numpy as np
import tensorflow as tf

from data import pipeline
from model import targets
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
        batch = next(iter(ds))
        return batch, targets.for_batch(batch, 64, (8, 16, 32))

    def test_train_min_face_turns_small_faces_into_ignore(self):
        kept, kept_targets = self._first_batch(min_face_px=4.0)
        self.assertFalse(kept['ignore'].numpy()[0, 0])
        self.assertGreater(int(np.sum(kept_targets['positive'].numpy())), 0)

        ignored, ignored_targets = self._first_batch(min_face_px=8.0)
        self.assertTrue(ignored['ignore'].numpy()[0, 0])
        self.assertEqual(int(np.sum(ignored_targets['positive'].numpy())), 0)
        # Neither face nor background: the points on it carry no classification loss.
        self.assertLess(float(np.sum(ignored_targets['cls_weight'].numpy())),
                        float(np.sum(kept_targets['cls_weight'].numpy())))

    def test_batches_are_uint8_crops_with_faces_padded_to_a_power_of_two(self):
        directory = tempfile.mkdtemp(dir=self.get_temp_dir())
        records = [fixtures.make_face_record(SMALL_FACE * n, height=96, width=128)
                   for n in (0, 3, 9)]
        fixtures.write_tiny_shards(directory, records, num_shards=1)
        ds = pipeline.build_dataset(f'{directory}/train-*', 3, 64, False)
        batch = next(iter(ds))
        self.assertEqual(batch['image'].dtype, tf.uint8)
        self.assertEqual(batch['image'].shape, (3, 64, 64, 3))
        self.assertEqual(batch['boxes'].shape[1], 16)  # 9 faces -> 16 slots
        self.assertAllEqual(np.sum(batch['face_mask'].numpy(), axis=1), [0, 3, 9])
        self.assertFalse(np.any(batch['boxes'].numpy()[~batch['face_mask'].numpy()]))
