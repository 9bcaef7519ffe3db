"""Decoding and NMS: the single path shared by validation, export and detect."""

import numpy as np
import tensorflow as tf

from data import boxes as box_lib
from model import anchors
from model import postprocess
from model.detector import NUM_OUTPUTS


def _raw_with_faces(faces_px, size=64, logit=4.0):
    """Raw outputs whose decoded boxes are faces_px at the nearest stride-8 points."""
    points, strides, _ = anchors.anchor_points(size, size)
    raw = np.full([1, points.shape[0], NUM_OUTPUTS], -8.0, np.float32)
    for face in faces_px:
        face = np.asarray(face, np.float32)
        centre = (face[:2] + face[2:]) / 2
        i = int(np.argmin(np.sum((points.numpy()[:64] - centre) ** 2, axis=1)))
        d = box_lib.encode_distances(points[i], tf.constant(face), strides[i]).numpy()
        raw[0, i, 0] = logit
        raw[0, i, 1:5] = np.log(np.expm1(d))  # inverse softplus
    return tf.constant(raw)


class PostprocessTest(tf.test.TestCase):

    def test_decode_recovers_boxes(self):
        faces = [[8.0, 8.0, 30.0, 28.0], [36.0, 40.0, 60.0, 62.0]]
        out = postprocess.detect(_raw_with_faces(faces), 64, 64, score_threshold=0.5)
        self.assertEqual(int(out['num_detections'][0]), 2)
        found = sorted((out['boxes'][0, :2].numpy() * 64).tolist())
        self.assertAllClose(found, sorted(faces), atol=1e-3)
        self.assertAllClose(out['scores'][0, :2], [1 / (1 + np.exp(-4.0))] * 2)
        self.assertAllEqual(out['boxes'][0, 2:], np.zeros([198, 4]))

    def test_nms_removes_overlapping_duplicate(self):
        raw = _raw_with_faces([[8.0, 8.0, 40.0, 40.0]]).numpy()
        points, strides, _ = anchors.anchor_points(64, 64)
        # A second, lower-scoring point predicting almost the same box.
        d = box_lib.encode_distances(points[27], tf.constant([9.0, 8.0, 40.0, 41.0]),
                                     strides[27]).numpy()
        raw[0, 27, 0], raw[0, 27, 1:5] = 2.0, np.log(np.expm1(d))
        # A third, separate face that must survive.
        d = box_lib.encode_distances(points[63], tf.constant([50.0, 50.0, 64.0, 64.0]),
                                     strides[63]).numpy()
        raw[0, 63, 0], raw[0, 63, 1:5] = 1.0, np.log(np.expm1(d))
        out = postprocess.detect(tf.constant(raw), 64, 64, score_threshold=0.5,
                                 iou_threshold=0.4)
        self.assertEqual(int(out['num_detections'][0]), 2)
        self.assertAllClose(out['scores'][0, :2], 1 / (1 + np.exp(-np.array([4.0, 1.0]))))

    def test_quality_head_scores_are_face_times_iou_probability(self):
        faces = [[8.0, 8.0, 30.0, 28.0], [36.0, 40.0, 60.0, 62.0]]
        raw = _raw_with_faces(faces).numpy()
        quality = np.full(raw.shape[:2] + (1,), -8.0, np.float32)
        strong = np.argmax(raw[0, :, 0])
        quality[0, strong, 0] = 2.0  # one face boxed well, the other not (logit -8)
        out = postprocess.detect(tf.constant(np.concatenate([raw, quality], -1)), 64, 64,
                                 score_threshold=1e-4)
        face = 1 / (1 + np.exp(-4.0))
        expected = sorted([face / (1 + np.exp(-2.0)), face / (1 + np.exp(8.0))], reverse=True)
        self.assertEqual(int(out['num_detections'][0]), 2)
        self.assertAllClose(out['scores'][0, :2], expected, rtol=1e-5)

    def test_no_detection_below_threshold(self):
        out = postprocess.detect(_raw_with_faces([]), 64, 64, score_threshold=0.5)
        self.assertEqual(int(out['num_detections'][0]), 0)


if __name__ == '__main__':
    tf.test.main()
