"""Robustness augmentation (data/robust.py): pixels, boxes and landmarks stay consistent."""

from unittest import mock

import numpy as np
import tensorflow as tf

from data import augment
from data import robust

SIZE = 64


def _batch(boxes, landmarks=None, images=None):
    """A padded batch: boxes [B, N, 4] normalized, zeros rows = padding."""
    boxes = np.asarray(boxes, np.float32)
    mask = boxes[..., 2] > boxes[..., 0]
    if landmarks is None:
        landmarks = np.zeros(boxes.shape[:2] + (10,), np.float32)
    if images is None:
        images = np.full((len(boxes), SIZE, SIZE, 3), 100, np.uint8)
    return {'image': tf.constant(images), 'boxes': tf.constant(boxes),
            'landmarks': tf.constant(landmarks, tf.float32),
            'landmarks_valid': tf.constant(mask), 'ignore': tf.zeros(mask.shape, tf.bool),
            'face_mask': tf.constant(mask)}


def _bright_point(y, x):
    image = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    r, c = int(y * SIZE), int(x * SIZE)
    image[0, r - 1:r + 2, c - 1:c + 2] = 255  # a 3x3 spot keeps its centre at 255 when rotated
    return image


class RotateTest(tf.test.TestCase):

    def test_landmark_follows_its_pixel(self):
        y, x = 0.2, 0.7
        landmarks = np.zeros((1, 1, 10), np.float32)
        landmarks[0, 0, :2] = [(int(y * SIZE) + 0.5) / SIZE, (int(x * SIZE) + 0.5) / SIZE]
        batch = _batch([[[0.1, 0.6, 0.3, 0.8]]], landmarks, _bright_point(y, x))
        batch['image'] = tf.cast(batch['image'], tf.float32)
        with mock.patch.object(robust, 'ROTATE_PROB', 1.0):
            out = robust.rotate(batch, seed=3)
        image = out['image'].numpy()[0, ..., 0]
        peak = np.argwhere(image > 200).mean(axis=0)  # the fill (114) stays below
        moved = out['landmarks'].numpy()[0, 0, :2] * SIZE - 0.5
        self.assertAllClose(peak, moved, atol=1.0)
        self.assertGreater(np.abs(moved - landmarks[0, 0, :2] * SIZE + 0.5).max(), 0.5)

    def test_box_holds_the_rotated_ellipse_and_keeps_its_centre(self):
        box = np.array([0.3, 0.2, 0.7, 0.5], np.float32)
        batch = _batch([[box]])
        batch['image'] = tf.cast(batch['image'], tf.float32)
        with mock.patch.object(robust, 'ROTATE_PROB', 1.0), \
                mock.patch.object(robust, 'MAX_DEGREES', 10.0):
            out = robust.rotate(batch, seed=5)
        new = out['boxes'].numpy()[0, 0]
        half = (box[2:] - box[:2]) / 2
        new_half = (new[2:] - new[:2]) / 2
        # Rotating an ellipse by up to 10 degrees keeps each half-extent within
        # [min(a, b), max(a, b)] and the area of its box at least the original's.
        self.assertTrue(np.all(new_half >= half.min() - 1e-6))
        self.assertTrue(np.all(new_half <= half.max() + 1e-6))
        self.assertGreaterEqual(np.prod(new_half), np.prod(half) - 1e-6)
        centre_distance = np.linalg.norm((new[:2] + new[2:]) / 2 - 0.5)
        self.assertAllClose(centre_distance, np.linalg.norm((box[:2] + box[2:]) / 2 - 0.5), atol=1e-5)

    def test_face_whose_centre_leaves_becomes_ignore(self):
        corner = [[0.0, 0.0, 0.04, 0.04]]  # a rotation about the centre moves it off the square
        batch = _batch([corner])
        batch['image'] = tf.cast(batch['image'], tf.float32)
        with mock.patch.object(robust, 'ROTATE_PROB', 1.0):
            out = robust.rotate(batch, seed=1)
        self.assertTrue(out['ignore'].numpy()[0, 0])
        self.assertTrue(out['face_mask'].numpy()[0, 0])

    def test_no_rotation_is_the_identity(self):
        batch = _batch([[[0.1, 0.2, 0.5, 0.6]]], images=np.random.RandomState(0).randint(
            0, 255, (1, SIZE, SIZE, 3)).astype(np.uint8))
        batch['image'] = tf.cast(batch['image'], tf.float32)
        with mock.patch.object(robust, 'ROTATE_PROB', 0.0):
            out = robust.rotate(batch)
        self.assertAllClose(out['image'], batch['image'], atol=1e-3)
        self.assertAllClose(out['boxes'], batch['boxes'], atol=1e-6)


class CopyPasteTest(tf.test.TestCase):

    def _donor_and_empty(self):
        images = np.full((2, SIZE, SIZE, 3), 100, np.uint8)
        images[0, 16:48, 16:48] = 250  # the donor's face: a bright square
        boxes = [[[0.25, 0.25, 0.75, 0.75]], [[0, 0, 0, 0]]]
        landmarks = np.zeros((2, 1, 10), np.float32)
        landmarks[0, 0] = np.tile([0.4, 0.4], 5)
        return _batch(boxes, landmarks, images)

    def test_face_free_image_gets_the_donor_face_where_its_box_says(self):
        with mock.patch.object(robust, 'PASTE_PROB', 1.0):
            out = robust.copy_paste(dict(self._donor_and_empty(), image=tf.cast(
                self._donor_and_empty()['image'], tf.float32)), min_face_px=4.0, seed=2)
        self.assertTrue(out['face_mask'].numpy()[1, 0])
        self.assertFalse(out['ignore'].numpy()[1, 0])
        y0, x0, y1, x1 = out['boxes'].numpy()[1, 0] * SIZE
        self.assertGreaterEqual(min(y1 - y0, x1 - x0), robust.MIN_PASTE_PX - 1)
        centre = out['image'].numpy()[1, int((y0 + y1) / 2), int((x0 + x1) / 2), 0]
        self.assertGreater(centre, 240)  # donor pixels landed inside the new box
        # The landmark (at 0.3 of the donor box) keeps its place in the pasted face.
        point = out['landmarks'].numpy()[1, 0, :2]
        self.assertAllClose((point - [y0 / SIZE, x0 / SIZE]) / ([y1 - y0, x1 - x0] / np.float32(SIZE)),
                            [0.3, 0.3], atol=0.02)
        # The donor is untouched.
        self.assertAllClose(out['image'][0], tf.cast(self._donor_and_empty()['image'][0], tf.float32))

    def test_images_with_faces_are_left_alone(self):
        batch = self._donor_and_empty()
        batch = dict(batch, image=tf.cast(batch['image'], tf.float32))
        full = {k: tf.concat([v[:1], v[:1]], 0) for k, v in batch.items()}
        with mock.patch.object(robust, 'PASTE_PROB', 1.0):
            out = robust.copy_paste(full, seed=2)
        for key in full:
            self.assertAllEqual(out[key], full[key])


class DegradeTest(tf.test.TestCase):

    def test_blur_removes_high_frequencies_and_range_holds(self):
        rng = np.random.RandomState(0)
        images = tf.constant(rng.randint(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32))
        with mock.patch.object(robust, 'BLUR_PROB', 1.0), \
                mock.patch.object(robust, 'NOISE_PROB', 0.0), \
                mock.patch.object(robust, 'FADE_PROB', 0.0):
            out = tf.function(robust.degrade)(images).numpy()
        detail = lambda a: np.abs(np.diff(a, axis=2)).mean()  # noqa: E731
        self.assertLess(detail(out), 0.5 * detail(images.numpy()))
        self.assertEqual(out.shape, images.shape)
        self.assertGreaterEqual(out.min(), 0.0)
        self.assertLessEqual(out.max(), 255.0)

    def test_fade_lowers_contrast(self):
        images = tf.constant(np.tile(np.linspace(0, 255, SIZE, dtype=np.float32)[None, None, :, None],
                                     [2, SIZE, 1, 3]))
        with mock.patch.object(robust, 'BLUR_PROB', 0.0), \
                mock.patch.object(robust, 'NOISE_PROB', 0.0), \
                mock.patch.object(robust, 'FADE_PROB', 1.0):
            out = robust.degrade(images).numpy()
        self.assertLess(out.std(), 0.7 * images.numpy().std())

    def test_jpeg_changes_pixels_keeps_shape(self):
        rng = np.random.RandomState(1)
        image = tf.constant(rng.randint(0, 256, (SIZE, SIZE, 3)).astype(np.uint8))
        with mock.patch.object(robust, 'JPEG_PROB', 1.0):
            out = robust.jpeg(image)
        self.assertEqual(out.shape, image.shape)
        self.assertEqual(out.dtype, tf.uint8)
        self.assertGreater(np.abs(out.numpy().astype(int) - image.numpy()).mean(), 5)


class FaceWindowsTest(tf.test.TestCase):

    def test_window_holds_the_largest_face_at_the_stated_size(self):
        boxes = tf.ragged.constant([[[0.1, 0.1, 0.2, 0.2], [0.4, 0.5, 0.8, 0.8]]] * 8,
                                   ragged_rank=1, dtype=tf.float32)
        ignore = tf.ragged.constant([[False, False]] * 8)
        height, width = tf.fill([8], 100.0), tf.fill([8], 200.0)
        old = (tf.zeros([8]), tf.zeros([8]), tf.fill([8], 100.0))
        y0, x0, side = augment.face_windows(height, width, old, boxes, ignore, 1.0, seed=4)
        longer = 60.0  # the second face: 40 px high, 60 px wide
        self.assertTrue(np.all(side.numpy() >= 1.2 * longer - 1e-3))
        self.assertTrue(np.all(side.numpy() <= 3.0 * longer + 1e-3))
        self.assertTrue(np.all(y0.numpy() <= 40.0 + 1e-3))
        self.assertTrue(np.all(y0.numpy() + side.numpy() >= 80.0 - 1e-3))
        self.assertTrue(np.all(x0.numpy() <= 100.0 + 1e-3))
        self.assertTrue(np.all(x0.numpy() + side.numpy() >= 160.0 - 1e-3))

    def test_photos_without_faces_keep_their_window(self):
        boxes = tf.ragged.constant([[]] * 3, ragged_rank=1, dtype=tf.float32, inner_shape=(4,))
        ignore = tf.ragged.constant([[]] * 3, dtype=tf.bool)
        old = (tf.fill([3], 1.0), tf.fill([3], 2.0), tf.fill([3], 50.0))
        new = augment.face_windows(tf.fill([3], 100.0), tf.fill([3], 100.0), old, boxes, ignore, 1.0)
        for a, b in zip(new, old):
            self.assertAllEqual(a, b)


class InsideAStepTest(tf.test.TestCase):

    def test_geometric_and_degrade_trace_once_in_a_function(self):
        batch = _batch([[[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]])

        @tf.function
        def step(b):
            b = robust.geometric(b, 4.0)
            return robust.degrade(augment.photometric(b['image'])), b

        images, out = step(batch)
        self.assertEqual(images.shape, (2, SIZE, SIZE, 3))
        self.assertTrue(np.all(np.isfinite(images.numpy())))
        self.assertTrue(np.all(np.isfinite(out['boxes'].numpy())))


if __name__ == '__main__':
    tf.test.main()


class GpuKernelTest(tf.test.TestCase):

    def test_no_bool_gather_nd_in_the_geometric_augmentation(self):
        # gather_nd has no GPU kernel for bool tensors: one in the train step would copy
        # the batch to the CPU and back every step.
        batch = _batch([[[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]]] * 2)
        batch['image'] = tf.cast(batch['image'], tf.float32)
        spec = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in batch.items()}
        graph = tf.function(robust.geometric).get_concrete_function(spec).graph
        gathers = [op for op in graph.get_operations() if op.type == 'GatherNd']
        self.assertNotEmpty(gathers)
        self.assertEqual([op.name for op in gathers if op.get_attr('Tparams') == tf.bool], [])
