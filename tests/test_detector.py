"""The network: output layout, any input size, and batch-norm folding for export."""

import dataclasses

import numpy as np
import tensorflow as tf
import keras

from model import anchors
from model.detector import (NUM_OUTPUTS, DetectorConfig, build_detector, fold_batch_norms,
                            is_widening, unfold_batch_norms, widen_weights)

# A small network for the widening tests.
SMALL = DetectorConfig(stem_channels=8, stage_channels=(16, 24, 32), neck_channels=16,
                       stage_units=(2, 2, 1))


def _randomize_batch_norms(model, seed=0):
    """Batch norms with statistics far from the identity, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])


class DetectorTest(tf.test.TestCase):

    def test_one_row_per_anchor_point_at_any_size(self):
        model = build_detector(DetectorConfig())
        for h, w in [(64, 64), (96, 160)]:
            raw = model(tf.zeros([2, h, w, 3]))
            points, _, _ = anchors.anchor_points(h, w, (8, 16, 32))
            self.assertEqual(raw.shape, (2, points.shape[0], NUM_OUTPUTS))
            self.assertEqual(raw.dtype, tf.float32)

    def test_folded_network_gives_the_same_outputs(self):
        for config in (DetectorConfig(), DetectorConfig(head_units=3, neck_channels=16,
                                                        stage_channels=(16, 24, 32))):
            model = build_detector(config)
            _randomize_batch_norms(model)
            for k in range(1, config.head_units):  # as after training: not the identity
                pw = model.get_layer(f'head{k}_pw')
                pw.kernel.assign(tf.random.normal(pw.kernel.shape, stddev=0.3, seed=k))
            folded = fold_batch_norms(model, config)
            self.assertFalse(any(isinstance(l, keras.layers.BatchNormalization)
                                 for l in folded.layers))
            self.assertLess(folded.count_params(), model.count_params())
            images = tf.random.uniform([2, 96, 128, 3], 0, 255, seed=1)
            expected = model(images, training=False).numpy()
            self.assertGreater(np.abs(expected).max(), 1.0)
            self.assertAllClose(folded(images).numpy(), expected, atol=1e-4, rtol=1e-4)

    def test_unfolded_export_computes_the_same_and_holds_its_activation_statistics(self):
        # Two head units and a quality column: the shared head depthwise and the per-level
        # norms that fold into one depthwise per level.
        config = DetectorConfig(head_units=2, quality_head=True, neck_channels=16,
                                stage_channels=(16, 24, 32), stage_units=(1, 2, 1))
        model = build_detector(config)
        _randomize_batch_norms(model)
        pw = model.get_layer('head1_pw')
        pw.kernel.assign(tf.random.normal(pw.kernel.shape, stddev=0.3, seed=2))
        folded = fold_batch_norms(model, config)
        images = tf.random.uniform([2, 96, 128, 3], 0, 255, seed=1)
        expected = model(images, training=False).numpy()
        crops = [tf.random.uniform([8, 64, 64, 3], 0, 255, seed=10 + i) for i in range(3)]

        identity = unfold_batch_norms(folded, build_detector(config))
        calibrated = unfold_batch_norms(folded, build_detector(config), crops)
        for unfolded in (identity, calibrated):
            self.assertAllClose(unfolded(images, training=False).numpy(), expected,
                                atol=1e-4, rtol=1e-4)
            # Folding it again gives the export back.
            self.assertAllClose(fold_batch_norms(unfolded, config)(images).numpy(), expected,
                                atol=1e-4, rtol=1e-4)
        # Training-mode batch norm normalizes with the batch's own statistics: with the
        # measured ones in the norms, a batch of those crops gives about the inference
        # outputs; with identity norms it gives something else.
        batch = crops[0]
        spread = np.abs(expected).max()
        calibrated_gap = np.abs(calibrated(batch, training=True).numpy() -
                                calibrated(batch, training=False).numpy()).max()
        identity_gap = np.abs(identity(batch, training=True).numpy() -
                              identity(batch, training=False).numpy()).max()
        self.assertLess(calibrated_gap, 0.05 * spread)
        self.assertGreater(identity_gap, 0.3 * spread)
        # The stem's norm holds the mean and variance of the stem's outputs on the crops.
        stem = keras.Model(calibrated.input, calibrated.get_layer('stem').output)
        bn = calibrated.get_layer('stem_bn')
        acts = np.concatenate([stem(c).numpy().reshape(-1, bn.gamma.shape[0]) for c in crops])
        self.assertAllClose(bn.moving_mean.numpy(), acts.mean(axis=0), atol=1e-3, rtol=1e-3)
        self.assertAllClose(bn.moving_variance.numpy() + bn.epsilon, acts.var(axis=0),
                            atol=1e-3, rtol=1e-3)

    def _widen(self, source_config, target_config):
        """Widens a random source network (batch norms as after training) into
        target_config's; checks that the target gives the source's outputs (in the source's
        columns, and in the last rows: a stride-4 level the source lacks comes first).
        Returns the target, a batch and the target's outputs on it."""
        source = build_detector(source_config)
        _randomize_batch_norms(source)
        target = build_detector(target_config)
        _randomize_batch_norms(target, seed=1)
        widen_weights(source, target)
        images = tf.random.uniform([2, 96, 128, 3], 0, 255, seed=1)
        expected = source(images, training=False).numpy()
        self.assertGreater(np.abs(expected).max(), 1.0)
        got = target(images, training=False).numpy()
        self.assertAllClose(got[:, -expected.shape[1]:, :expected.shape[-1]], expected,
                            atol=1e-4, rtol=1e-4)
        return target, images, got

    @staticmethod
    def _kernel_and_gradient(model, images, layer_name):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model(images, training=True)))
        kernel = model.get_layer(layer_name).kernel
        return kernel.numpy(), tape.gradient(loss, kernel).numpy()

    def test_widened_network_starts_with_the_same_outputs_and_learns_its_new_channels(self):
        wide = DetectorConfig(stem_channels=16, stage_channels=(24, 24, 40), neck_channels=24,
                              stage_units=(2, 2, 1), image_size=320)
        self.assertTrue(is_widening(SMALL, wide))
        self.assertTrue(is_widening(SMALL, SMALL))
        self.assertFalse(is_widening(wide, SMALL))
        deeper = DetectorConfig(stem_channels=16, stage_units=(2, 3, 1))
        self.assertFalse(is_widening(SMALL, deeper))
        target, images, _ = self._widen(SMALL, wide)
        self.assertEqual(target.get_layer('stem').filters, 16)
        # The new channels are not dead: the zero weights that read them get gradients.
        kernel, grad = self._kernel_and_gradient(target, images, 's0_0_pw')
        self.assertAllEqual(kernel[:, :, 8:, :], np.zeros_like(grad[:, :, 8:, :]))
        self.assertGreater(np.abs(grad[:, :, 8:, :]).max(), 0.0)
        with self.assertRaisesRegex(ValueError, 'does not fit'):
            widen_weights(target, build_detector(SMALL))

    def test_head_units_added_to_a_trained_network_start_as_the_identity(self):
        two = dataclasses.replace(SMALL, neck_channels=24, head_units=2)
        self.assertTrue(is_widening(SMALL, two))
        self.assertFalse(is_widening(two, SMALL))
        target, images, _ = self._widen(SMALL, two)
        # Training moves the new unit off the identity: its zero pointwise gets gradients.
        kernel, grad = self._kernel_and_gradient(target, images, 'head1_pw')
        self.assertAllEqual(kernel, np.zeros_like(kernel))
        self.assertGreater(np.abs(grad).max(), 0.0)

    def test_quality_head_added_to_a_trained_network_keeps_its_outputs(self):
        quality = dataclasses.replace(SMALL, quality_head=True)
        self.assertTrue(is_widening(SMALL, quality))
        self.assertFalse(is_widening(quality, SMALL))
        target, images, got = self._widen(SMALL, quality)
        self.assertEqual(got.shape[-1], NUM_OUTPUTS + 1)
        # The IoU logit starts at 0 (probability 0.5 everywhere), so scores keep their
        # order, and learns: its zero kernel column gets gradients.
        self.assertAllEqual(got[..., NUM_OUTPUTS], np.zeros_like(got[..., NUM_OUTPUTS]))
        kernel = target.get_layer('head_out').kernel
        with tf.GradientTape() as tape:
            iou_logits = target(images, training=True)[..., NUM_OUTPUTS]
            loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.fill(tf.shape(iou_logits), 0.8), logits=iou_logits))
        grad = tape.gradient(loss, kernel).numpy()
        self.assertAllEqual(kernel[..., NUM_OUTPUTS], np.zeros_like(kernel[..., 0]))
        self.assertGreater(np.abs(grad[..., NUM_OUTPUTS]).max(), 0.0)
        # Folding keeps the 16th column like the others.
        kernel.assign(tf.random.normal(kernel.shape, stddev=0.3, seed=2))
        self.assertAllClose(fold_batch_norms(target, quality)(images).numpy(),
                            target(images, training=False).numpy(), atol=1e-4, rtol=1e-4)

    def test_stride_4_level_comes_first_and_is_added_to_a_trained_network(self):
        fine = dataclasses.replace(SMALL, strides=(4, 8, 16, 32), quality_head=True)
        self.assertTrue(is_widening(SMALL, fine))
        self.assertFalse(is_widening(fine, SMALL))
        # _widen checks that the other levels' rows are the source's.
        target, images, got = self._widen(SMALL, fine)
        # One row per point, the stride-4 points first (model/anchors.py's order); the new
        # level's rows come from its fresh layers.
        _, point_strides, sizes = anchors.anchor_points(96, 128, fine.strides)
        self.assertEqual(got.shape, (2, point_strides.shape[0], NUM_OUTPUTS + 1))
        self.assertEqual(sizes[0], 24 * 32)
        self.assertAllEqual(point_strides[:sizes[0]], np.full(sizes[0], 4.0))
        self.assertGreater(np.std(got[:, :sizes[0], 1:5]), 0.0)
        # The new level learns: its lateral's kernel gets gradients.
        _, grad = self._kernel_and_gradient(target, images, 'fpn_lats4')
        self.assertGreater(np.abs(grad).max(), 0.0)
        # Folding covers the new level's own batch norms.
        self.assertAllClose(fold_batch_norms(target, fine)(images).numpy(),
                            target(images, training=False).numpy(), atol=1e-4, rtol=1e-4)
        with self.assertRaisesRegex(ValueError, 'strides must be one of'):
            DetectorConfig(strides=(2, 4, 8))
        self.assertEqual(DetectorConfig.from_json(fine.to_json()), fine)

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
        self.assertEqual(config.head_units, 1)
        self.assertFalse(config.quality_head)
        self.assertEqual(config.stem_channels, 24)

    def test_bad_stage_config_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, 'stage_channels and stage_units'):
            DetectorConfig(stage_channels=(16, 24))
        with self.assertRaisesRegex(ValueError, 'stage_channels and stage_units'):
            DetectorConfig.from_json('{"stage_units": [1, 0, 1]}')
        with self.assertRaisesRegex(ValueError, 'head_units'):
            DetectorConfig(head_units=0)


if __name__ == '__main__':
    tf.test.main()
