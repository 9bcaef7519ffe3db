"""Augmentations keep boxes, landmarks and pixels consistent, eagerly and inside Dataset.map."""

import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from data import augment
from data import features
from data import pipeline
from tests import fixtures

BOXES = [[0.1, 0.1, 0.45, 0.4], [0.5, 0.55, 0.9, 0.85], [0.0, 0.85, 0.3, 1.0]]
FACE_KEYS = ('boxes', 'landmarks', 'landmarks_valid', 'ignore')


def _record():
    return fixtures.make_face_record(BOXES, height=96, width=128)


def _serialized(count=1):
    return tf.constant([features.to_example(_record()).SerializeToString()] * count)


def _crops(windows, flip, size, min_face_px=augment.MIN_FACE_PX):
    """Plan, render and place for a batch of copies of the fixture (eager): one dict per
    window with ``image`` and the visible faces."""
    example = features.parse_batch(_serialized(len(flip)))
    height = tf.cast(example['height'], tf.float32)
    width = tf.cast(example['width'], tf.float32)
    plan = augment.plan_crops(height, width, windows, tf.constant(flip), size)
    faces = {k: example[k].to_tensor() for k in FACE_KEYS}
    faces['face_mask'] = tf.ones_like(faces['ignore'])
    placed = augment.place_faces(faces, plan, size, min_face_px)
    out = []
    for i in range(len(flip)):
        mask = placed['face_mask'][i]
        image = augment.render(example['encoded'][i], {k: v[i] for k, v in plan.items()}, size)
        out.append({'image': image, **{k: tf.boolean_mask(placed[k][i], mask) for k in FACE_KEYS}})
    return out


def _crop(window, size, flip=False, min_face_px=0.0):
    return _crops(tuple(tf.constant([v], tf.float32) for v in window), [flip], size,
                  min_face_px)[0]


def _decoded():
    return tf.io.decode_jpeg(features.parse_batch(_serialized())['encoded'][0], channels=3)


def _random_crops(eager, n=12):
    if eager:
        tf.random.set_seed(1)
        windows, flip = augment.random_windows(tf.fill([n], 96.0), tf.fill([n], 128.0),
                                               (0.5, 1.5))
        return _crops(windows, flip.numpy().tolist(), 64)
    directory = tempfile.mkdtemp()
    fixtures.write_tiny_shards(directory, [_record()], num_shards=1)
    ds = pipeline.build_dataset(f'{directory}/train-*', 1, 64, True, shuffle_buffer=1,
                                scale_range=(0.5, 1.5))
    out = []
    for batch in ds.take(n):
        mask = batch['face_mask'][0]
        out.append({'image': batch['image'][0],
                    **{k: tf.boolean_mask(batch[k][0], mask) for k in FACE_KEYS}})
    return out


class AugmentTest(tf.test.TestCase, parameterized.TestCase):

    def _check_consistent(self, out, size=64):
        image = out['image'].numpy()
        boxes, lm = out['boxes'].numpy(), out['landmarks'].numpy()
        self.assertEqual(image.shape, (size, size, 3))
        self.assertEqual(image.dtype, np.uint8)
        self.assertTrue(np.all((boxes >= 0) & (boxes <= 1)))
        self.assertTrue(np.all(boxes[:, 2:] >= boxes[:, :2]))
        for box, points, valid, ignore in zip(boxes, lm, out['landmarks_valid'].numpy(),
                                              out['ignore'].numpy()):
            if ignore:
                continue
            cy, cx = (box[:2] + box[2:]) / 2 * size
            # The fixture paints each face as a skin-coloured ellipse: its centre stays skin.
            self.assertGreater(image[int(cy), int(cx), 0], 150, msg=str(box))
            if valid:
                ys, xs = points[0::2], points[1::2]
                self.assertTrue(np.all((ys >= box[0] - 1e-4) & (ys <= box[2] + 1e-4)))
                self.assertTrue(np.all((xs >= box[1] - 1e-4) & (xs <= box[3] + 1e-4)))
                self.assertLess(xs[0], xs[1])  # left eye stays left of the right eye

    @parameterized.named_parameters(('eager', True), ('dataset_map', False))
    def test_random_crops_and_flips_keep_faces_on_their_pixels(self, eager):
        outs = _random_crops(eager)
        self.assertTrue(any(len(o['boxes']) for o in outs))
        for out in outs:
            self._check_consistent(out)

    def test_letterbox_is_exact(self):
        windows, flip = augment.letterbox_windows(tf.constant([96.0]), tf.constant([128.0]))
        out = _crops(windows, flip.numpy().tolist(), 64)[0]
        # 96x128 -> 48x64 in the top-left of a 64x64 square; boxes shrink by 0.75 in y.
        expected = np.array(BOXES) * [0.75, 1.0, 0.75, 1.0]
        self.assertAllClose(out['boxes'], expected, atol=1e-5)
        self.assertAllEqual(out['image'][60, 30], [augment.PAD_VALUE] * 3)
        self._check_consistent(out)

    def test_zoom_out_pads_and_shrinks_faces(self):
        out = _crop((-96.0, -128.0, 288.0), 72)
        self.assertAllEqual(out['image'][0, 0], [augment.PAD_VALUE] * 3)
        self.assertAllClose(out['boxes'][0],
                            (np.array(BOXES[0]) * [96, 128, 96, 128] + [96, 128, 96, 128]) / 288,
                            atol=1e-5)

    def test_cut_faces_follow_the_centre_rule(self):
        # The top-left 64 px (x < 0.5): face 0 is inside; faces 1 and 2 (x > 0.55) vanish.
        out = _crop((0.0, 0.0, 64.0), 64)
        self.assertEqual(len(out['boxes']), 1)
        self.assertFalse(out['ignore'][0])
        # y 16-80, x 38.4-102.4 (0.3 to 0.8): face 0's centre (x 0.25) is outside but its
        # right part shows, so it is kept as ignore; face 1's centre (0.7) is inside, so it
        # stays a face; face 2 (x > 0.85) vanishes.
        out = _crop((16.0, 38.4, 64.0), 64)
        self.assertAllEqual(out['ignore'], [True, False])

    def test_window_decode_matches_resizing_the_decoded_photo(self):
        photo = _decoded().numpy().astype(np.float32)
        # Windows whose part of the photo resizes to whole output pixels (elsewhere the
        # placement rounds to a whole pixel, and plan_crops moves the boxes by as much).
        for window in ((10.0, 20.0, 48.0), (-24.0, -32.0, 192.0), (0.0, 0.0, 128.0)):
            out = _crop(window, 48)['image'].numpy().astype(float)
            y0, x0, side = window
            # The reference: pad the decoded photo grey, cut the window, resize it.
            canvas = np.full([400, 400, 3], augment.PAD_VALUE, np.float32)  # photo at 100, 100
            canvas[100:196, 100:228] = photo
            part = canvas[int(100 + y0):int(100 + y0 + side), int(100 + x0):int(100 + x0 + side)]
            reference = tf.image.resize(part, [48, 48]).numpy()
            self.assertLess(np.mean(np.abs(out - reference)), 2.0, msg=str(window))

    def test_flip_mirrors_pixels_boxes_and_landmarks(self):
        window = (8.0, 30.0, 80.0)
        plain, mirrored = _crop(window, 64), _crop(window, 64, flip=True)
        self.assertAllEqual(plain['image'].numpy()[:, ::-1], mirrored['image'])
        boxes = plain['boxes'].numpy()
        self.assertAllClose(mirrored['boxes'], np.stack(
            [boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], 1), atol=1e-6)
        self._check_consistent(mirrored)

    def test_tiny_faces_become_ignore(self):
        out = _crop((-960.0, -1280.0, 2000.0), 64, min_face_px=4.0)
        self.assertTrue(np.all(out['ignore'].numpy()))

    @parameterized.named_parameters(('eager', True), ('tf_function', False))
    def test_photometric_keeps_range_and_varies_per_image(self, eager):
        images = tf.stack([_crop((0.0, 0.0, 128.0), 64)['image']] * 8)
        jitter = augment.photometric if eager else tf.function(augment.photometric)
        out = jitter(images).numpy()
        self.assertEqual(out.dtype, np.float32)
        self.assertGreaterEqual(out.min(), 0.0)
        self.assertLessEqual(out.max(), 255.0)
        # Eight copies of one image come out differently: each gets its own factors.
        self.assertGreater(len({round(float(m), 3) for m in out.mean(axis=(1, 2, 3))}), 4)


if __name__ == '__main__':
    tf.test.main()
