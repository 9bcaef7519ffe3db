"""The network: output layout, any input size, and batch-norm folding for export."""

import numpy as np
import tensorflow as tf
import keras

from model import anchors
from model.detector import NUM_OUTPUTS, DetectorConfig, build_detector, fold_batch_norms


class DetectorTest(tf.test.TestCase):

    def test_one_row_per_anchor_point_at_any_size(self):
        model = build_detector(DetectorConfig())
        for h, w in [(64, 64), (96, 160)]:
            raw = model(tf.zeros([2, h, w, 3]))
            points, _, _ = anchors.anchor_points(h, w, (8, 16, 32))
            self.assertEqual(raw.shape, (2, points.shape[0], NUM_OUTPUTS))
            self.assertEqual(raw.dtype, tf.float32)

    def test_folded_network_gives_the_same_outputs(self):
        config = DetectorConfig()
        model = build_detector(config)
        rng = np.random.default_rng(0)
        for layer in model.layers:  # batch norms with statistics far from the identity
            if isinstance(layer, keras.layers.BatchNormalization):
                c = layer.gamma.shape[0]
                layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                                   rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])
        folded = fold_batch_norms(model, config)
        self.assertFalse(any(isinstance(l, keras.layers.BatchNormalization)
                             for l in folded.layers))
        self.assertLess(folded.count_params(), model.count_params())
        images = tf.random.uniform([2, 96, 128, 3], 0, 255, seed=1)
        expected = model(images, training=False).numpy()
        self.assertGreater(np.abs(expected).max(), 1.0)
        self.assertAllClose(folded(images).numpy(), expected, atol=1e-4, rtol=1e-4)

    def test_stage_config_builds_that_network_and_survives_json(self):
        config = DetectorConfig(stage_channels=(16, 24, 32), stage_units=(1, 2, 1),
                                neck_channels=16)
        model = build_detector(config)
        self.assertEqual(model.get_layer('s2_0_pw').filters, 32)
        self.assertEqual([l.name for l in model.layers if l.name.startswith('s1_')][-1],
                         's1_1_relu')
        self.assertLess(model.count_params(), build_detector(DetectorConfig()).count_params())
        self.assertEqual(DetectorConfig.from_json(config.to_json()), config)

    def test_config_written_before_stage_fields_loads_the_original_network(self):
        old = '{"width": 1.0, "neck_channels": 48, "strides": [8, 16, 32], ' \
              '"anchor_scale": 4.0, "image_size": 320}'
        config = DetectorConfig.from_json(old)
        self.assertEqual(config.stage_channels, (48, 64, 96))
        self.assertEqual(config.stage_units, (3, 4, 3))

    def test_bad_stage_config_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, 'stage_channels and stage_units'):
            DetectorConfig(stage_channels=(16, 24))
        with self.assertRaisesRegex(ValueError, 'stage_channels and stage_units'):
            DetectorConfig.from_json('{"stage_units": [1, 0, 1]}')


if __name__ == '__main__':
    tf.test.main()
