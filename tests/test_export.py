"""export -> reload in a fresh process gives the in-memory model's outputs; detect.py's JSONL."""

import json
import os
import shutil
import signal
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image
import pytest

import export
from model.detector import DetectorConfig, build_detector, fold_batch_norms
from tests import cli
from tests import fixtures
from training import checkpoints

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier

_RELOAD = '''
import sys, numpy as np, tensorflow as tf

m = tf.saved_model.load(sys.argv[1])
data = [open(p, 'rb').read() for p in sys.argv[3:]]
enc = m.signatures['serving_default'](images=tf.constant(data))
one = m.signatures['serving_default'](images=tf.constant(data[:1]))
img = tf.cast(tf.io.decode_jpeg(data[0]), tf.float32)[None]
flt = m.signatures['detect_image'](images=img)
np.savez(sys.argv[2], **{'enc_' + k: v.numpy() for k, v in enc.items()},
         **{'one_' + k: v.numpy() for k, v in one.items()},
         **{'flt_' + k: v.numpy() for k, v in flt.items()})
'''


# Sizes that fill the network input exactly, so no flat padding produces tied scores
# (ties make the NMS order arbitrary). The second is downscaled from 192x128 to 96x64.
_SIZES = [(64, 96), (192, 128)]


def _rows(out, prefix, i):
    """One image's detections as [K, 15] rows (score, box, landmarks), sorted."""
    rows = np.concatenate([np.asarray(out[prefix + 'scores'])[i, :, None],
                           np.asarray(out[prefix + 'boxes'])[i],
                           np.asarray(out[prefix + 'landmarks'])[i]], axis=1)
    return rows[np.lexsort(np.round(rows, 2).T[::-1])]


def _cpu_flags(folder, flags):
    """model/runtime.CPUINFO patched to a file whose flags line is `flags` (None: no file)."""
    from unittest import mock

    from model import runtime
    path = os.path.join(folder, 'cpuinfo')
    if os.path.exists(path):
        os.remove(path)
    if flags is not None:
        with open(path, 'w') as f:
            f.write(f'processor\t: 0\nflags\t\t: fpu sse {flags}\n\nprocessor\t: 1\n')
    return mock.patch.object(runtime, 'CPUINFO', path)


class ExportTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        tf.random.set_seed(3)
        config = DetectorConfig(image_size=64)
        cls.model = build_detector(config)
        # He-initialised random weights keep activations alive through the untrained network
        # (the default init fades to constant outputs, hence tied scores), and a raised face
        # prior gives NMS real boxes to choose from.
        rng = np.random.default_rng(3)
        for layer in cls.model.layers:
            weights = layer.get_weights()
            if hasattr(layer, 'kernel') and weights:
                fan_in = np.prod(weights[0].shape[:-1]) if weights[0].ndim > 1 else 1
                if 'DepthwiseConv2D' in type(layer).__name__:
                    fan_in = np.prod(weights[0].shape[:2])
                weights[0] = rng.normal(0, np.sqrt(2.0 / fan_in), weights[0].shape)
                layer.set_weights(weights)
        # Random deep nets saturate: scale each output column of the last layer so the raw
        # outputs on a fixture image have a unit spread (varied scores, sane boxes).
        head = cls.model.get_layer('head_out')
        kernel, bias = head.get_weights()
        probe = fixtures.make_face_record([[0.2, 0.2, 0.7, 0.6]], 64, 96, seed=9)
        probe_image = tf.cast(tf.io.decode_jpeg(probe.encoded), tf.float32)[None]
        raw = cls.model(probe_image).numpy()[0]
        kernel = kernel / np.maximum(raw.std(axis=0), 1e-6)
        bias[:] = 0.0
        bias[0] = -1.0
        head.set_weights([kernel, bias])
        cls.export_dir = os.path.join(cls.dir, 'saved_model')
        serving = dict(max_side=96, score_threshold=0.2, iou_threshold=0.4, max_detections=20)
        cls.detector = export.export(cls.model, config, cls.export_dir, **serving)
        export.write_model_info(cls.export_dir, config, 'ckpt-0', True, serving)
        cls.images = []
        for i, (h, w) in enumerate(_SIZES):
            path = os.path.join(cls.dir, f'img{i}.jpg')
            record = fixtures.make_face_record([[0.2, 0.2, 0.7, 0.6]], h, w, seed=i)
            with open(path, 'wb') as f:
                f.write(record.encoded)
            cls.images.append(path)

    def _assert_same_detections(self, got, expected):
        """Same scores; same boxes and landmarks for every detection whose score is unique.

        A random network gives many (nearly) equal scores, and NMS may keep either of two
        overlapping boxes whose scores differ by float noise; those rows are compared by
        score only.
        """
        self.assertAllClose(got[:, 0], expected[:, 0], atol=1e-4)
        scores = expected[:, 0]
        gaps = np.abs(scores[:, None] - scores[None, :]) + np.eye(len(scores))
        unique = (gaps.min(axis=1) > 1e-3) & (scores > 0)
        self.assertGreater(unique.sum(), 0)
        self.assertAllClose(got[unique], expected[unique], atol=1e-3)

    def test_reload_in_fresh_process_matches_in_memory(self):
        data = [open(p, 'rb').read() for p in self.images]
        expected = self.detector.detect_encoded(tf.constant(data))
        self.assertGreater(int(expected['num_detections'][0]), 0)
        script = os.path.join(self.dir, 'reload.py')
        with open(script, 'w') as f:
            f.write(_RELOAD)
        out_npz = os.path.join(self.dir, 'out.npz')
        result = cli.run(script, self.export_dir, out_npz, *self.images)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        got = np.load(out_npz)
        self.assertAllEqual(got['enc_num_detections'], expected['num_detections'])
        for i in range(len(self.images)):
            self._assert_same_detections(_rows(got, 'enc_', i), _rows(expected, '', i))
        # The float signature agrees with the encoded one on the same image alone (in a
        # batch, a smaller image is padded to the batch's largest, which changes its border).
        self.assertEqual(int(got['flt_num_detections'][0]), int(got['one_num_detections'][0]))
        self._assert_same_detections(_rows(got, 'flt_', 0), _rows(got, 'one_', 0))

    def test_each_weight_is_stored_once(self):
        stored = sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(
            os.path.join(self.export_dir, 'variables', 'variables')) if shape)
        # The folded network: batch norms are merged away, so fewer than the trained model.
        folded = fold_batch_norms(self.model, DetectorConfig(image_size=64)).count_params()
        self.assertEqual(stored, folded)

    def test_export_reads_back_as_the_network_it_holds(self):
        # train.py --init_from=<export dir> starts from these weights.
        self.assertTrue(checkpoints.is_export(self.export_dir))
        self.assertFalse(checkpoints.is_export(self.dir))
        folded, config = checkpoints.load_export(self.export_dir)
        self.assertEqual(config, DetectorConfig(image_size=64))
        images = tf.random.uniform([1, 64, 96, 3], 0, 255, seed=4)
        self.assertAllClose(folded(images).numpy(),
                            self.model(images, training=False).numpy(), atol=1e-4, rtol=1e-4)

    def test_export_whose_info_names_another_network_is_a_clear_error(self):
        other = os.path.join(self.dir, 'other_info')
        shutil.copytree(self.export_dir, other)
        info_path = os.path.join(other, 'facedet.json')
        info = json.load(open(info_path))
        info['config']['neck_channels'] = 32
        json.dump(info, open(info_path, 'w'))
        with self.assertRaisesRegex(ValueError, r'other_info: \S+/kernel is .* its '
                                    'facedet.json config builds'):
            checkpoints.load_export(other)

    def test_boxes_are_in_original_pixels(self):
        data = [open(p, 'rb').read() for p in self.images]
        out = self.detector.detect_encoded(tf.constant(data))
        for i, (h, w) in enumerate(_SIZES):
            n = int(out['num_detections'][i])
            boxes = out['boxes'][i, :n].numpy()
            self.assertTrue(np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= w + 1e-3))
            self.assertTrue(np.all(boxes[:, 1] >= 0) and np.all(boxes[:, 1] + boxes[:, 3] <= h + 1e-3))
        # The downscaled image's boxes reach beyond the 96-px network input.
        n = int(out['num_detections'][1])
        self.assertGreater(float(np.max(out['boxes'][1, :n, 1] + out['boxes'][1, :n, 3])), 96)

    def test_tflite_matches_the_savedmodel_and_has_no_nan(self):
        path = os.path.join(self.dir, 'facedet_96.tflite')
        export.export_tflite(self.model, DetectorConfig(image_size=64), path, 96,
                             score_threshold=0.2, max_detections=20)
        image = np.asarray(Image.open(self.images[0]).resize((96, 96)), np.float32)[None]
        runner = tf.lite.Interpreter(model_path=path).get_signature_runner('serve')
        got = runner(images=image)
        for value in got.values():
            self.assertFalse(np.isnan(value).any())
        expected = self.detector.detect_images(tf.constant(image))
        self.assertEqual(int(got['num_detections'][0]), int(expected['num_detections'][0]))
        self.assertGreater(int(got['num_detections'][0]), 0)
        self._assert_same_detections(_rows(got, '', 0), _rows(expected, '', 0))

    def test_tflite_runtime_gives_the_savedmodels_detections(self):
        from model import runtime
        lite, name = runtime.load(self.export_dir)
        self.assertEqual(name, 'tflite')
        signature, name = runtime.load(self.export_dir, 'savedmodel')
        self.assertEqual(name, 'savedmodel')
        # As they come, downscaled to max_side (192x128), and padded to a multiple of 32.
        images = [np.asarray(Image.open(p).convert('RGB'), np.float32) for p in self.images]
        images.append(images[0][:70, :90])
        for image in images:
            got = lite(images=image[None])
            expected = signature(images=tf.constant(image[None]))
            self.assertEqual(int(got['num_detections'][0]), int(expected['num_detections'][0]))
            self.assertGreater(int(got['num_detections'][0]), 0)
            self._assert_same_detections(_rows(got, '', 0), _rows(expected, '', 0))
        # A batch runs image by image.
        batch = lite(images=np.stack([images[0], images[0]]))
        self.assertAllClose(batch['scores'][1], batch['scores'][0])

    def test_tflite_runtime_needs_the_files_export_writes(self):
        import shutil
        from model import runtime
        model_dir = os.path.join(self.dir, 'no_tflite_model')
        shutil.copytree(self.export_dir, model_dir)
        os.remove(os.path.join(model_dir, runtime.NETWORK_FILE))
        self.assertEqual(runtime.load(model_dir)[1], 'savedmodel')
        with self.assertRaisesRegex(FileNotFoundError, 'network.tflite'):
            runtime.load(model_dir, 'tflite')
        with self.assertRaisesRegex(ValueError, 'runtime must be one of'):
            runtime.load(model_dir, 'onnx')

    def _raw(self, path, image, resize_to=None):
        """The network file's raw outputs [P, C] for image [1, H, W, 3], resized inside to
        resize_to (or not resized)."""
        from model.lite_network import Network
        with open(path, 'rb') as f:
            network = Network(f.read(), path)
        with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
            warnings.simplefilter('ignore', UserWarning)
            interpreter = tf.lite.Interpreter(model_content=network.for_size(resize_to))
        (input_details,) = interpreter.get_input_details()
        self.assertEqual(input_details['dtype'], np.float32)  # float at both ends
        interpreter.resize_tensor_input(input_details['index'], image.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_details['index'], image)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]['index'])[0]

    def test_int8_network_ranks_like_the_float_one(self):
        from model import runtime
        model_dir = os.path.join(self.dir, 'int8_model')
        shutil.copytree(self.export_dir, model_dir)
        image = np.asarray(Image.open(self.images[0]).convert('RGB'), np.float32)[None]
        inputs = [(image, np.array([96, 128], np.int32)), (image, np.array([64, 96], np.int32))]
        export.export_network_tflite(self.detector.model,
                                     os.path.join(model_dir, runtime.NETWORK_INT8_FILE),
                                     inputs * 2)
        with _cpu_flags(self.dir, 'avx2 avx512_vnni'):
            self.assertEqual(runtime.load(model_dir)[1], 'tflite_int8')  # auto takes it
        for flags in ('avx2 fma', None):  # no VNNI, no /proc/cpuinfo: float
            with _cpu_flags(self.dir, flags):
                self.assertEqual(runtime.load(model_dir)[1], 'tflite')
        self.assertEqual(runtime.load(model_dir, 'tflite')[1], 'tflite')
        int8_path = os.path.join(model_dir, runtime.NETWORK_INT8_FILE)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            kinds = {d['dtype'] for d in tf.lite.Interpreter(int8_path).get_tensor_details()}
        self.assertIn(np.int8, kinds)  # quantized inside
        for resize_to in (None, (96, 128)):
            raw = self._raw(os.path.join(model_dir, runtime.NETWORK_FILE), image, resize_to)
            raw8 = self._raw(int8_path, image, resize_to)
            self.assertFalse(np.isnan(raw8).any())
            # The face logits of the points: the same order, near the same values.
            logits, logits8 = raw[:, 0], raw8[:, 0]
            self.assertGreater(np.corrcoef(logits, logits8)[0, 1], 0.98)
            self.assertLess(np.abs(logits8 - logits).max(), 0.1 * np.ptp(logits))

    def test_tflite_resizes_inside_as_tensorflow_does_outside(self):
        from model import multiscale, runtime
        lite, _ = runtime.load(self.export_dir, 'tflite')
        image = np.asarray(Image.open(self.images[0]).convert('RGB'))  # 64x96 uint8
        # Up and down, the aspect ratio changed; 32x48 on a padded canvas of 64x128 resized
        # to 32x64, as the SavedModel pads 32x48 to 32x64.
        for size in ((96, 96), (32, 64), (32, 48)):
            self.assertTrue(lite.can_resize(64, 96, *size))
            inside = lite(images=image[None], resize_to=size)
            outside = lite(images=multiscale._resize(image, *size)[None])
            self.assertEqual(int(inside['num_detections'][0]), int(outside['num_detections'][0]))
            self.assertGreater(int(inside['num_detections'][0]), 0)
            self._assert_same_detections(_rows(inside, '', 0), _rows(outside, '', 0))
        # The passes of run_scales take the inside path (96x96 and 32x32 of a 64x64 photo)
        # and find the faces the SavedModel finds with TensorFlow's resize.
        square, passes = image[:, :64], [multiscale.Pass(1.5), multiscale.Pass(0.5)]
        calls = []

        def spy(images, resize_to=None):
            calls.append(resize_to)
            return lite(images=images, resize_to=resize_to)

        spy.can_resize = lite.can_resize
        boxes, scores, _ = multiscale.run_scales(spy, square, passes)
        self.assertEqual(calls, [(96, 96), (32, 32)])
        signature, _ = runtime.load(self.export_dir, 'savedmodel')
        boxes_sm, scores_sm, _ = multiscale.run_scales(signature, square, passes)
        self.assertGreater(len(scores), 0)
        np.testing.assert_allclose(scores, scores_sm, atol=1e-3)
        np.testing.assert_allclose(boxes, boxes_sm, atol=0.05)
        # Sizes it cannot take: beyond max_side (96), a canvas of no whole pixels (64 rows
        # at 50/64 would need 81.92 rows to reach 64).
        self.assertFalse(lite.can_resize(64, 96, 128, 96))
        self.assertFalse(lite.can_resize(64, 96, 50, 64))
        with self.assertRaisesRegex(ValueError, 'cannot resize 64x96 images to 50x64 inside'):
            lite(images=image[None], resize_to=(50, 64))

    def test_a_network_file_without_the_resize_runs_as_it_is(self):
        from model.lite_network import Network
        path = os.path.join(self.dir, 'facedet_64.tflite')  # a fixed-size file, no size input
        data = export.export_tflite(self.model, DetectorConfig(image_size=64), path, 64)
        network = Network(data, path)
        self.assertFalse(network.resizes)
        self.assertEqual(network.for_size(None), data)
        with self.assertRaisesRegex(ValueError, 'facedet_64.tflite has no resize inside'):
            network.for_size((64, 64))
        with self.assertRaisesRegex(ValueError, 'not.tflite is not a TFLite model'):
            Network(b'\x00' * 64, 'not.tflite')
        with open(os.path.join(self.export_dir, 'network.tflite'), 'rb') as f:
            network = Network(f.read(), 'network.tflite')
        self.assertTrue(network.resizes)
        with self.assertRaisesRegex(ValueError, 'multiples of 32, got 40x64'):
            network.for_size((40, 64))

    def test_export_of_an_export_keeps_its_weights_and_writes_passes_and_int8(self):
        from model import multiscale, runtime
        records = os.path.join(self.dir, 'calib')
        fixtures.write_tiny_shards(records, fixtures.random_records(6, seed=4), num_shards=1)
        out = os.path.join(self.dir, 're_export')
        result = cli.run('export.py', f'--model_dir={self.export_dir}', f'--export_dir={out}',
                         '--max_side=96', '--score_threshold=0.2', '--max_detections=20',
                         '--passes=1.5:0:40,0.5:30:',
                         f'--int8_records={records}/train-*.tfrecord', '--int8_images=4',
                         tf_log_level=None)
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn('calibrated on 4 images', result.stdout)
        # Run as a user runs it: no TensorFlow C++ line (the converter's E0000 NodeDef one).
        self.assertNotRegex(result.stderr, r'(?m)^[EWI]\d{4} ')
        self.assertIn('default passes: 1.5x (faces < 40 px), 0.5x (faces >= 30 px)',
                      result.stdout)
        self.assertEqual(runtime.default_passes(out),
                         [multiscale.Pass(1.5, 0, 40), multiscale.Pass(0.5, 30)])
        self.assertEqual(runtime.default_passes(self.export_dir), [multiscale.Pass(1.0)])
        with _cpu_flags(self.dir, 'avx_vnni'):
            self.assertEqual(runtime.load(out)[1], 'tflite_int8')
        with open(os.path.join(out, 'facedet.json')) as f:
            self.assertEqual(json.load(f)['checkpoint'], 'ckpt-0')  # the source's
        # The folded weights are written again as they are: the same TFLite network, byte
        # for byte, and the same detections from the SavedModel.
        with open(os.path.join(out, runtime.NETWORK_FILE), 'rb') as f, \
                open(os.path.join(self.export_dir, runtime.NETWORK_FILE), 'rb') as g:
            self.assertEqual(f.read(), g.read())
        image = tf.cast(tf.io.decode_jpeg(open(self.images[0], 'rb').read()), tf.float32)[None]
        # Its detect_image runs the passes; detect_pass the one pass the source's ran.
        again = tf.saved_model.load(out).signatures['detect_pass'](images=image)
        first = tf.saved_model.load(self.export_dir).signatures['detect_image'](images=image)
        self._assert_same_detections(_rows(again, '', 0), _rows(first, '', 0))
        # detect.py runs the export's passes unless --scales says otherwise.
        result = cli.run('detect.py', f'--model={out}', f'--input={self.images[0]}',
                         f'--output={os.path.join(self.dir, "detect_passes")}')
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        auto = 'tflite_int8' if runtime.fast_int8() else 'tflite'  # this machine's CPU
        self.assertIn(f'({auto}): 1.5x (faces < 40 px) + 0.5x (faces >= 30 px) merged',
                      result.stdout)
        result = cli.run('detect.py', f'--model={out}', f'--input={self.images[0]}',
                         f'--output={os.path.join(self.dir, "detect_1x")}', '--scales=1',
                         '--runtime=tflite')
        self.assertIn('(tflite): 1x', result.stdout)
        # Calibration records that are not there: an error before anything is written.
        missing = os.path.join(self.dir, 'never_written')
        result = cli.run('export.py', f'--model_dir={out}', f'--export_dir={missing}',
                         f'--int8_records={records}/nothing-*.tfrecord')
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('nothing-*.tfrecord', result.stderr)
        self.assertFalse(os.path.exists(missing))
        # Writing over the source is refused.
        result = cli.run('export.py', f'--model_dir={out}', f'--export_dir={out}')
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('--export_dir must differ from --model_dir', result.stderr)

    def test_failed_export_leaves_no_partial_directory_and_keeps_the_previous(self):
        # --tflite_size=40 fails after the SavedModel and network.tflite are written.
        fresh = os.path.join(self.dir, 'failed_fresh')
        previous = os.path.join(self.dir, 'failed_over')
        shutil.copytree(self.export_dir, previous)
        with open(os.path.join(previous, 'facedet.json')) as f:
            info = f.read()
        for target in (fresh, previous):
            result = cli.run('export.py', f'--model_dir={self.export_dir}',
                             f'--export_dir={target}', '--tflite_size=40')
            self.assertNotEqual(result.returncode, 0)
            self.assertIn('--tflite_size must be a multiple of 32, got 40', result.stderr)
            self.assertFalse(os.path.exists(target + export.PARTIAL_SUFFIX))
        self.assertFalse(os.path.exists(fresh))
        self.assertEqual(sorted(os.listdir(previous)), sorted(os.listdir(self.export_dir)))
        with open(os.path.join(previous, 'facedet.json')) as f:
            self.assertEqual(f.read(), info)

    def test_sigterm_leaves_no_partial_directory(self):
        target = os.path.join(self.dir, 'terminated')
        run = cli.start('export.py', f'--model_dir={self.export_dir}', f'--export_dir={target}')
        while not os.path.exists(target + export.PARTIAL_SUFFIX) and run.poll() is None:
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate()
        self.assertEqual(run.returncode, 143, stderr[-2000:])
        self.assertIn(f'terminated (SIGTERM): nothing written to {target}', stderr)
        self.assertNotIn('Traceback', stderr)
        self.assertFalse(os.path.exists(target + export.PARTIAL_SUFFIX))
        self.assertFalse(os.path.exists(target))

    def test_publish_replaces_an_export_only_when_the_new_one_is_whole(self):
        target = os.path.join(self.dir, 'published')
        os.makedirs(target)
        open(os.path.join(target, 'old_file'), 'w').close()
        staging = export.staging_dir(target)
        self.assertEqual(staging, target + export.PARTIAL_SUFFIX)
        open(os.path.join(staging, 'facedet.json'), 'w').close()
        self.assertTrue(os.path.exists(os.path.join(target, 'old_file')))  # untouched so far
        export.publish(staging, target)
        self.assertEqual(os.listdir(target), ['facedet.json'])
        self.assertFalse(os.path.exists(staging))
        self.assertFalse(os.path.exists(target + '.old'))

    def test_detect_writes_valid_jsonl_and_pngs(self):
        folder = os.path.join(self.dir, 'photos')
        os.makedirs(folder, exist_ok=True)
        for p in self.images:
            os.link(p, os.path.join(folder, os.path.basename(p)))
        Image.new('L', (50, 40), 128).save(os.path.join(folder, 'grey.png'))
        with open(os.path.join(folder, 'broken.jpg'), 'wb') as f:
            f.write(b'\xff\xd8 not really a jpeg')
        out_dir = os.path.join(self.dir, 'detect')
        result = cli.run('detect.py', f'--model={self.export_dir}', f'--input={folder}',
                         f'--output={out_dir}', '--score_threshold=0.3')
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn('broken.jpg', result.stderr)
        lines = [json.loads(l) for l in open(os.path.join(out_dir, 'detections.jsonl'))]
        self.assertEqual(sorted(os.path.basename(l['image']) for l in lines),
                         ['broken.jpg', 'grey.png', 'img0.jpg', 'img1.jpg'])
        broken = [l for l in lines if 'error' in l]  # tests/test_detect.py has the rest
        self.assertEqual([os.path.basename(l['image']) for l in broken], ['broken.jpg'])
        for line in (l for l in lines if 'error' not in l):
            self.assertEqual(set(line), {'image', 'width', 'height', 'boxes', 'scores',
                                         'landmarks'})
            self.assertEqual(len(line['boxes']), len(line['scores']))
            self.assertTrue(all(s >= 0.3 for s in line['scores']))
            for x, y, w, h in line['boxes']:
                self.assertTrue(0 <= x and x + w <= line['width'] + 1e-2)
                self.assertTrue(0 <= y and y + h <= line['height'] + 1e-2)
        self.assertEqual(len(tf.io.gfile.glob(os.path.join(out_dir, '*.png'))), 3)

    def test_scales_merge_duplicates_and_map_boxes_back(self):
        from model import multiscale
        signature = tf.saved_model.load(self.export_dir).signatures['detect_image']
        pixels = np.array(Image.open(self.images[1]).convert('RGB'))
        boxes, scores, landmarks = multiscale.run_scales(signature, pixels, [1.0])
        self.assertGreater(len(scores), 0)
        self.assertTrue(np.all(np.diff(scores) <= 0))
        # The same scale twice: every box has an identical twin, which the merge removes.
        boxes2, scores2, _ = multiscale.run_scales(signature, pixels, [1.0, 1.0])
        self.assertAllClose(np.sort(scores2), np.sort(scores), atol=1e-6)
        # Half the size: boxes come back in the original image's pixels.
        half, _, _ = multiscale.run_scales(signature, pixels, [0.5])
        h, w = pixels.shape[:2]
        self.assertTrue(np.all(half[:, 0] + half[:, 2] <= w + 1e-2))
        self.assertTrue(np.all(half[:, 1] + half[:, 3] <= h + 1e-2))
        self.assertGreater(half[:, 2].max(), 0.25 * w)  # not left in the half-size frame
        self.assertEqual(landmarks.shape, (len(scores), 10))

    def test_detect_leaves_out_untrained_landmarks(self):
        import shutil
        model_dir = os.path.join(self.dir, 'no_landmarks_model')
        shutil.copytree(self.export_dir, model_dir)
        with open(os.path.join(model_dir, 'facedet.json'), 'w') as f:
            json.dump({'landmarks': False}, f)
        out_dir = os.path.join(self.dir, 'detect_no_lmk')
        result = cli.run('detect.py', f'--model={model_dir}', f'--input={self.images[1]}',
                         f'--output={out_dir}', '--score_threshold=0.3')
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        line = json.loads(open(os.path.join(out_dir, 'detections.jsonl')).readline())
        self.assertGreater(len(line['boxes']), 0)
        self.assertNotIn('landmarks', line)
        self.assertEqual(len(tf.io.gfile.glob(os.path.join(out_dir, '*.png'))), 1)

    def test_bad_scales_are_a_clear_error(self):
        result = cli.run('detect.py', f'--model={self.export_dir}', f'--input={self.images[0]}',
                         '--scales=1,zero')
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--scales: 'zero' is not a positive number", result.stderr)

    def test_detect_without_model_is_a_clear_error(self):
        result = cli.run('detect.py', f'--model={self.dir}/nope', f'--input={self.images[0]}')
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('not a SavedModel', result.stderr)
        self.assertNotIn('Traceback', result.stderr)


if __name__ == '__main__':
    tf.test.main()



class PassesInGraphTest(tf.test.TestCase):
    """An export with default passes: serving_default and detect_image run them inside the
    graph and return what detect.py's path (model/multiscale.run_scales on the SavedModel's
    detect_pass, as detect.py --runtime=savedmodel runs it) returns."""

    @classmethod
    def setUpClass(cls):
        from model import multiscale
        from model.detector import BOX
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        import keras
        config = DetectorConfig(image_size=64)
        keras.utils.set_random_seed(5)  # the same weights whatever ran before in the process
        model = build_detector(config)
        # Output columns scaled to a unit spread on a fixture photo and a low face prior,
        # as ExportTest does: varied scores, and faces of both passes' sizes.
        photo = tf.io.decode_jpeg(_photo(0)).numpy()
        raw = model(tf.constant(photo, tf.float32)[None]).numpy()[0]
        head = model.get_layer('head_out')
        kernel, bias = head.get_weights()
        bias[:] = 0.0
        bias[0] = -1.0
        bias[BOX] = 1.5  # boxes of about 2 strides: 16-64 px at the network's scale
        head.set_weights([kernel / np.maximum(raw.std(axis=0), 1e-6), bias])
        cls.passes = [multiscale.Pass(1.5, 0, 40), multiscale.Pass(0.5, 30)]
        cls.serving = dict(max_side=256, score_threshold=0.4, iou_threshold=0.4,
                           max_detections=1000)
        cls.export_dir = os.path.join(cls.dir, 'passes')
        export.export(model, config, cls.export_dir, passes=cls.passes, **cls.serving)
        export.write_model_info(cls.export_dir, config, 'ckpt-0', True, cls.serving, cls.passes)
        cls.loaded = tf.saved_model.load(cls.export_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)
        super().tearDownClass()

    def _detect_py(self, encoded):
        """detect.py --runtime=savedmodel's detections (before its --score_threshold)."""
        from model import multiscale, runtime
        one_pass, _ = runtime.load(self.export_dir, 'savedmodel')
        pixels = tf.io.decode_jpeg(encoded).numpy()
        return multiscale.run_scales(one_pass, pixels, runtime.default_passes(self.export_dir))

    def _assert_matches(self, got, i, expected, name):
        boxes, scores, _ = expected
        n = int(got['num_detections'][i])
        self.assertGreater(n, 0, name)
        self.assertEqual(n, len(scores), name)
        self.assertAllClose(got['scores'][i, :n], scores, atol=1e-4)
        self.assertAllClose(got['boxes'][i, :n], boxes, atol=1.0)

    def test_signatures_match_detect_py_on_fixture_photos(self):
        for i in range(2):
            encoded = _photo(i)
            expected = self._detect_py(encoded)
            sides = np.maximum(expected[0][:, 2], expected[0][:, 3])
            # Faces only the 1.5x pass keeps and faces only the 0.5x pass keeps: the merge runs.
            self.assertTrue((sides < 30).any() and (sides >= 40).any(), sides)
            pixels = tf.cast(tf.io.decode_jpeg(encoded), tf.float32)[None]
            self._assert_matches(self.loaded.signatures['detect_image'](images=pixels), 0,
                                 expected, 'detect_image')
            self._assert_matches(
                self.loaded.signatures['serving_default'](images=tf.constant([encoded])), 0,
                expected, 'serving_default')

    def test_tf_serving_rest_request(self):
        """README's request, as TF Serving's REST layer turns it into the signature's input:
        each {"b64": ...} decoded to bytes, the instances stacked into a [B] string tensor."""
        import base64
        photos = [_photo(0), _photo(1)]
        body = json.dumps({'instances': [{'b64': base64.b64encode(p).decode('ascii')}
                                         for p in photos]})
        images = tf.constant([base64.b64decode(row['b64'])
                              for row in json.loads(body)['instances']], tf.string)
        self.assertEqual(images.shape, [2])
        got = self.loaded.signatures['serving_default'](images=images)
        for i, photo in enumerate(photos):  # photos of different sizes in one batch
            self._assert_matches(got, i, self._detect_py(photo), f'instance {i}')


def _photo(seed):
    """A JPEG fixture photo, 96x128 or 120x72."""
    height, width = [(96, 128), (120, 72)][seed]
    return fixtures.make_face_record([[0.2, 0.2, 0.7, 0.6]], height, width, seed=seed).encoded
