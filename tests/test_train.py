"""train.py end to end: 2-step smoke run, resume, distribution, precision, bad input."""

import json
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from model.detector import DetectorConfig, build_detector
from tests import cli
from tests import fixtures
from training import checkpoints
from training import loop
from training import validation

pytestmark = pytest.mark.slow  # runs whole processes (train.py, export.py...): not in the fast tier


def _free_ports(count):
    """Ports free now, below the kernel's ephemeral range (32768 and up on Linux), so that no
    outgoing connection takes one as its source port before a worker binds it (gRPC keeps
    connecting to a peer that is still starting)."""
    import random
    import socket
    ports = []
    for port in random.Random().sample(range(20000, 32000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(('localhost', port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError('no free ports in 20000-32000')


def _wait_all(workers, timeout):
    """(stdout, stderr) of each process, read as they run (a full pipe would stall one); if
    one fails, or they run past `timeout` seconds (a worker waiting for a peer that is gone
    waits for ever), all are killed and the error names each one's exit status and the end
    of its stderr."""
    import threading
    import time
    outputs = [None] * len(workers)

    def read(i):
        outputs[i] = workers[i].communicate()

    readers = [threading.Thread(target=read, args=(i,), daemon=True)
               for i in range(len(workers))]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    codes = [None] * len(workers)
    while time.monotonic() < deadline:
        codes = [w.poll() for w in workers]
        if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
            break
        time.sleep(0.5)
    for worker in workers:
        worker.kill()
    for reader in readers:
        reader.join(30)
    if any(c != 0 for c in codes):
        raise AssertionError('\n'.join(
            f'worker {i}: exit status {c} (None: still running after {timeout} s, or when '
            f'another failed; killed); stderr ends:\n{(out or ("", ""))[1][-2000:]}'
            for i, (c, out) in enumerate(zip(codes, outputs))))
    return outputs


def _image_summaries(model_dir, writer):
    """[(step, tag, number of strings)] of the image summaries in model_dir/writer's events."""
    found = []
    for path in sorted(tf.io.gfile.glob(os.path.join(model_dir, writer, 'events.*'))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == 'images':
                    found.append((event.step, value.tag, len(value.tensor.string_val)))
    return found


class TrainTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        cls.train = fixtures.write_tiny_shards(os.path.join(cls.dir, 'rec'),
                                               fixtures.random_records(12), 'train', 2)
        cls.val = fixtures.write_tiny_shards(os.path.join(cls.dir, 'rec'),
                                             fixtures.random_records(4, seed=9), 'val', 1)

    def _train(self, model_dir, *extra):
        return cli.run('train.py', '--flagfile=configs/smoke.flags',
                       f'--train_records={self.train}', f'--val_records={self.val}',
                       f'--model_dir={model_dir}', *extra)

    def _assert_latest(self, model_dir, name):
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
        self.assertEqual(os.path.basename(latest), name)

    def test_smoke_then_resume_continues_the_step_count(self):
        model_dir = os.path.join(self.dir, 'resume')
        first = self._train(model_dir)
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        self.assertIn('step 2/2', first.stdout)
        self.assertIn('validation at step 2', first.stdout)
        self._assert_latest(model_dir, 'ckpt-2')
        # --precision=auto, the default, chose float32 on this CPU and flags.txt says so.
        self.assertIn('precision float32', first.stdout)
        with open(os.path.join(model_dir, 'flags.txt')) as f:
            self.assertIn('--precision=float32', f.read())
        config = json.load(open(os.path.join(model_dir, 'model_config.json')))
        self.assertEqual(config['image_size'], 64)
        self.assertTrue(tf.io.gfile.glob(os.path.join(model_dir, 'train', 'events.*')))
        self.assertTrue(os.path.exists(os.path.join(model_dir, 'best', 'best.json')))
        # The val writer has the validation photos (training/val_images.py) at step 2.
        photos = _image_summaries(model_dir, 'val')
        self.assertEqual([(step, tag) for step, tag, _ in photos], [(2, 'val/photos')])
        self.assertEqual(photos[0][2], 2 + 4)  # width, height, then the 4 photos' PNGs

        second = self._train(model_dir, '--train_steps=4')
        self.assertEqual(second.returncode, 0, second.stderr[-3000:])
        self.assertIn('at step 2', second.stdout)
        self.assertNotIn('step 1/4', second.stdout)
        self.assertIn('step 3/4', second.stdout)
        self.assertIn('step 4/4', second.stdout)
        self._assert_latest(model_dir, 'ckpt-4')

    def test_resume_without_weight_average_in_the_checkpoint(self):
        # A run without EMA (or from before it existed) resumes with EMA on: the average
        # starts from the restored weights instead of failing on the missing object.
        model_dir = os.path.join(self.dir, 'no_ema')
        first = self._train(model_dir, '--ema_decay=0', '--val_records=')
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
        self.assertNotIn('ema', {n.split('/')[0] for n, _ in tf.train.list_variables(latest)})
        second = self._train(model_dir, '--train_steps=3', '--val_records=')
        self.assertEqual(second.returncode, 0, second.stderr[-3000:])
        self.assertIn('resumed from', second.stdout)
        self._assert_latest(model_dir, 'ckpt-3')
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
        self.assertIn('ema', {n.split('/')[0] for n, _ in tf.train.list_variables(latest)})

    @staticmethod
    def _kernels(model_dir, key):
        """{layer name: kernel} of the key ('model' or 'ema') network in the latest
        checkpoint of a run."""
        model = build_detector(checkpoints.load_config(model_dir))
        path = checkpoints.find_checkpoint(model_dir, 'latest')
        tf.train.Checkpoint(**{key: model}).restore(path).expect_partial() \
            .assert_existing_objects_matched()
        return {layer.name: layer.weights[0].numpy() for layer in model.layers
                if layer.weights and 'bn' not in layer.name}

    def test_init_from_starts_with_the_earlier_runs_averaged_weights(self):
        source = os.path.join(self.dir, 'init_source')
        out = self._train(source, '--val_records=')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        source_ckpt = tf.train.latest_checkpoint(os.path.join(source, 'checkpoints'))
        # A learning rate of 0 keeps the kernels where they started (batch-norm statistics
        # still move), so after one step they must be the source's averaged weights.
        target = os.path.join(self.dir, 'init_target')
        out = self._train(target, '--val_records=', f'--init_from={source}', '--train_steps=1',
                          '--learning_rate=0', '--image_size=96')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertIn('starting from the weights of', out.stdout)
        self.assertIn('step 1/1', out.stdout)
        source_kernels = self._kernels(source, 'ema')
        self.assertGreater(len(source_kernels), 10)
        for name, kernel in self._kernels(target, 'model').items():
            self.assertAllEqual(kernel, source_kernels[name], name)
        # A fresh run's kernels are its own random ones.
        fresh = os.path.join(self.dir, 'init_fresh')
        out = self._train(fresh, '--val_records=', '--train_steps=1', '--learning_rate=0',
                          '--seed=5')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        fresh_kernels = self._kernels(fresh, 'model')
        self.assertFalse(all(np.array_equal(k, source_kernels[n])
                             for n, k in fresh_kernels.items()))

        # A wider stem: the source's kernels fill its leading channels, and the layer that
        # reads the stem gives the new channels zero weights. A second head unit starts as
        # the identity (zero pointwise).
        wide = os.path.join(self.dir, 'init_wide')
        out = self._train(wide, '--val_records=', f'--init_from={source}', '--train_steps=1',
                          '--learning_rate=0', '--image_size=96', '--stem_channels=32',
                          '--head_units=2')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        wide_kernels = self._kernels(wide, 'model')
        self.assertEqual(wide_kernels['stem'].shape[-1], 32)
        self.assertAllEqual(wide_kernels['stem'][..., :24], source_kernels['stem'])
        self.assertAllEqual(wide_kernels['s0_0_pw'][:, :, :24], source_kernels['s0_0_pw'])
        self.assertAllEqual(wide_kernels['s0_0_pw'][:, :, 24:],
                            np.zeros_like(wide_kernels['s0_0_pw'][:, :, 24:]))
        self.assertAllEqual(wide_kernels['head_out'], source_kernels['head_out'])
        self.assertNotIn('head1_pw', source_kernels)
        self.assertAllEqual(wide_kernels['head1_pw'], np.zeros_like(wide_kernels['head1_pw']))

        # A narrower neck cannot hold the source's weights.
        out = self._train(os.path.join(self.dir, 'init_other'), '--val_records=',
                          f'--init_from={source}', '--neck_channels=32')
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('--init_from', out.stderr)
        self.assertIn('another network', out.stderr)
        self.assertNotIn('Traceback', out.stderr)
        # Refused before anything is written, so the corrected rerun is not blocked.
        self.assertFalse(os.path.exists(os.path.join(self.dir, 'init_other', 'model_config.json')))

    def test_init_from_an_export_starts_from_its_outputs(self):
        # Fine-tuning the shipped model: --init_from takes export.py's directory.
        source = os.path.join(self.dir, 'export_source')
        out = self._train(source, '--val_records=', '--stem_channels=16', '--quality_head')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        exported = os.path.join(self.dir, 'export_source_saved')
        out = cli.run('export.py', f'--model_dir={source}', f'--export_dir={exported}')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        # A learning rate of 0: the kernels stay, and the norms move one step (momentum 0.99)
        # from the statistics measured on the first training crops toward one batch's.
        target = os.path.join(self.dir, 'export_target')
        out = self._train(target, '--val_records=', f'--init_from={exported}',
                          '--train_steps=1', '--learning_rate=0')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertIn(f'starting from the weights of {exported} (an export: batch norms '
                      'unfolded with the statistics of 32 training crops)', out.stdout)
        # Network flags it was not given are the export's (base.flags gives the neck).
        self.assertIn('network flags from --init_from: --stem_channels=16 ', out.stdout)
        self.assertIn('--quality_head=True', out.stdout)
        self.assertNotIn('--neck_channels', out.stdout)
        self.assertEqual(checkpoints.load_config(target), checkpoints.load_config(source))
        # Layers without a norm are the export's own weights.
        source_kernels = self._kernels(source, 'ema')
        target_kernels = self._kernels(target, 'model')
        for name in ('head_pw', 'head_out'):
            self.assertAllClose(target_kernels[name], source_kernels[name], atol=1e-6)
        # The trained network, folded again, computes what the export computes.
        reexported = os.path.join(self.dir, 'export_target_saved')
        out = cli.run('export.py', f'--model_dir={target}', f'--export_dir={reexported}',
                      '--checkpoint=latest')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        images = tf.random.uniform([2, 64, 96, 3], 0, 255, seed=7)
        expected = checkpoints.load_export(exported)[0](images).numpy()
        got = checkpoints.load_export(reexported)[0](images).numpy()
        self.assertGreater(np.abs(expected).max(), 1.0)
        self.assertAllClose(got, expected, atol=0.02 * np.abs(expected).max(), rtol=0)

        # A path that is neither a run nor an export is named.
        out = self._train(os.path.join(self.dir, 'init_nothing'), '--val_records=',
                          f'--init_from={self.dir}')
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('neither a train.py --model_dir', out.stderr)
        self.assertNotIn('Traceback', out.stderr)

    def test_fine_tune_of_an_export_keeps_its_passes_serving_and_landmarks(self):
        # The source export: trained landmarks, two passes, its own serving settings.
        source = os.path.join(self.dir, 'keep_source')
        out = self._train(source, '--val_records=')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        exported = os.path.join(self.dir, 'keep_source_saved')
        out = cli.run('export.py', f'--model_dir={source}', f'--export_dir={exported}',
                      '--passes=1.5:0:200,0.5:100:', '--max_side=800', '--max_detections=50')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        # Fine-tuned on box-only photos: validated before the first step and after the last.
        records = [fixtures.make_face_record([[0.2, 0.2, 0.6, 0.5]], landmarks_valid=[False],
                                             seed=i) for i in range(6)]
        plain = fixtures.write_tiny_shards(os.path.join(self.dir, 'keep_plain'), records,
                                           'train', 1)
        target = os.path.join(self.dir, 'keep_target')
        out = cli.run('train.py', '--flagfile=configs/smoke.flags', f'--train_records={plain}',
                      f'--val_records={self.val}', f'--model_dir={target}',
                      f'--init_from={exported}')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertRegex(out.stdout, r'validation before training \(the --init_from weights\): '
                         r'.*ap50 \d')
        self.assertRegex(out.stdout, r'validation at step 2: .*ap50 \d')
        reexported = os.path.join(self.dir, 'keep_target_saved')
        out = cli.run('export.py', f'--model_dir={target}', f'--export_dir={reexported}',
                      '--max_detections=20')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertIn(f'landmarks: as trained for {exported}', out.stdout)
        source_info = json.load(open(os.path.join(exported, 'facedet.json')))
        info = json.load(open(os.path.join(reexported, 'facedet.json')))
        self.assertEqual(info['default_passes'], source_info['default_passes'])
        self.assertEqual(info['serving']['max_side'], 800)
        self.assertEqual(info['serving']['max_detections'], 20)  # a flag given wins
        self.assertTrue(info['landmarks'])
        self.assertEqual(info['landmarks_trained_on'], exported)

    def test_landmark_labels_are_counted_for_export(self):
        records = [fixtures.make_face_record([[0.2, 0.2, 0.6, 0.5]], landmarks_valid=[False],
                                             seed=i) for i in range(6)]
        plain = fixtures.write_tiny_shards(os.path.join(self.dir, 'no_lmk'), records, 'train', 1)
        for name, train_records, expected in [('no_lmk', plain, False),
                                              ('lmk', self.train, True)]:
            model_dir = os.path.join(self.dir, f'count_{name}')
            out = cli.run('train.py', '--flagfile=configs/smoke.flags',
                          f'--train_records={train_records}', f'--model_dir={model_dir}',
                          '--val_records=')
            self.assertEqual(out.returncode, 0, out.stderr[-3000:])
            latest = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
            self.assertEqual(checkpoints.landmarks_trained(latest), expected, name)
            # The averaged weights are saved beside the raw ones, and export takes them.
            names = {n.split('/')[0] for n, _ in tf.train.list_variables(latest)}
            self.assertIn('ema', names)
            export_dir = os.path.join(self.dir, f'export_{name}')
            out = cli.run('export.py', f'--model_dir={model_dir}', f'--export_dir={export_dir}')
            self.assertEqual(out.returncode, 0, out.stderr[-3000:])
            info = json.load(open(os.path.join(export_dir, 'facedet.json')))
            self.assertEqual(info['landmarks'], expected)

    def test_mirrored_on_two_cpu_devices_in_bfloat16(self):
        model_dir = os.path.join(self.dir, 'mirrored')
        out = self._train(model_dir, '--strategy=mirrored', '--cpu_devices=2',
                          '--precision=mixed_bfloat16')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertIn('step 2/2', out.stdout)
        self.assertRegex(out.stdout, r'step 2/2 loss \d+\.\d+')
        self.assertIn('2 replica(s) (MirroredStrategy), dtype policy mixed_bfloat16, '
                      'optimizer AdamW', out.stdout)
        self.assertTrue(os.path.exists(os.path.join(model_dir, 'checkpoints', 'ckpt-2.index')))

    def test_xla_with_robust_augment_and_with_mirrored(self):
        # XLA compiles each replica's forward pass, loss and gradients; robust.py's ops,
        # which have no XLA kernel, and the cross-device update stay outside (the whole
        # step under XLA failed with either).
        for name, extra in (('xla_robust', ['--robust_augment']),
                            ('xla_mirrored', ['--strategy=mirrored', '--cpu_devices=2'])):
            out = self._train(os.path.join(self.dir, name), '--jit_compile', '--val_records=',
                              *extra)
            self.assertEqual(out.returncode, 0, out.stderr[-3000:])
            self.assertRegex(out.stdout, r'step 2/2 loss \d+\.\d+')

    def test_multi_worker_on_localhost_ports(self):
        cluster = {'worker': [f'localhost:{p}' for p in _free_ports(2)]}
        model_dir = os.path.join(self.dir, 'multi_worker')
        workers = [cli.start('train.py', '--flagfile=configs/smoke.flags',
                             f'--train_records={self.train}', f'--val_records={self.val}',
                             f'--model_dir={model_dir}', '--strategy=multi_worker',
                             env={'TF_CONFIG': json.dumps({'cluster': cluster, 'task': {
                                 'type': 'worker', 'index': i}})})
                   for i in range(2)]
        outputs = _wait_all(workers, timeout=300)
        for worker, (stdout, stderr) in zip(workers, outputs):
            self.assertEqual(worker.returncode, 0, stderr[-3000:])
            self.assertIn('step 2/2', stdout)
        # The chief (worker 0) validates and writes model_dir; worker 1 writes its own copy.
        self.assertIn('validation at step 2', outputs[0][0])
        self.assertNotIn('validation at step', outputs[1][0])
        self._assert_latest(model_dir, 'ckpt-2')
        self._assert_latest(os.path.join(model_dir, 'workers', 'worker_1'), 'ckpt-2')
        self.assertTrue(os.path.exists(os.path.join(model_dir, 'best', 'best.json')))

    def test_model_dir_files_are_never_read_half_written(self):
        # Multi-worker runs write flags.txt and model_config.json of their shared model_dir
        # at the same moment as another worker reads them.
        import threading
        path = os.path.join(self.dir, 'shared.json')
        texts = ['{"a": "%s"}' % ('x' * 200_000), '{"b": "%s"}' % ('y' * 100_000)]
        checkpoints.write_text(path, texts[0])
        done = threading.Event()

        def write():
            for i in range(200):
                checkpoints.write_text(path, texts[i % 2])
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        reads = 0
        while not done.is_set() or reads < 10:
            with open(path) as f:
                self.assertIn(f.read(), texts)
            reads += 1
        writer.join()
        self.assertEqual(os.listdir(self.dir).count('shared.json'), 1)
        self.assertFalse([n for n in os.listdir(self.dir) if n.endswith('.tmp')])

    def test_mixed_float16_builds_loss_scaling(self):
        # On CPU float16 is slow but must still run and stay finite.
        model_dir = os.path.join(self.dir, 'fp16')
        out = self._train(model_dir, '--precision=mixed_float16', '--val_records=')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertIn('step 2/2', out.stdout)
        self.assertIn('dtype policy mixed_float16, optimizer LossScaleOptimizer', out.stdout)
        # The loss scale was saved with the optimizer, and the weights are float32.
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
        names = [n for n, _ in tf.train.list_variables(latest)]
        self.assertTrue([n for n in names if 'scale' in n.lower() and n.startswith('optimizer/')],
                        names)

    def test_float16_run_resumes_in_float16_under_auto_and_bfloat16_is_named(self):
        # A run begun on a T4 (auto: mixed_float16) resumed where auto picks another
        # precision (an A100's bfloat16; float32 on this CPU) keeps its float16.
        model_dir = os.path.join(self.dir, 'fp16_resume')
        first = self._train(model_dir, '--precision=mixed_float16', '--val_records=')
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        asked = self._train(model_dir, '--precision=mixed_bfloat16', '--val_records=',
                            '--train_steps=3')
        self.assertEqual(asked.returncode, 1, asked.stdout[-3000:])
        self.assertIn('started with --precision=mixed_float16', asked.stderr)
        self.assertIn('--precision=mixed_bfloat16 cannot resume them', asked.stderr)
        self.assertNotIn('move it away', asked.stdout + asked.stderr)
        self.assertNotIn('Traceback', asked.stderr)
        auto = self._train(model_dir, '--precision=auto', '--val_records=', '--train_steps=3')
        self.assertEqual(auto.returncode, 0, auto.stderr[-3000:])
        self.assertIn(f'precision mixed_float16 (as {model_dir} started; auto would pick '
                      'float32 here', auto.stdout)
        self.assertIn('resumed from', auto.stdout)
        self.assertIn('step 3/3', auto.stdout)
        with open(os.path.join(model_dir, 'flags.txt')) as f:
            self.assertIn('--precision=mixed_float16', f.read())

    def test_missing_records_is_a_clear_error(self):
        out = cli.run('train.py', '--flagfile=configs/smoke.flags',
                      f'--train_records={self.dir}/nothing-*.tfrecord',
                      f'--model_dir={self.dir}/missing')
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('no files match', out.stderr)
        self.assertIn('make_records.py', out.stderr)
        self.assertNotIn('Traceback', out.stderr)

    def test_shard_that_is_not_a_tfrecord_is_named(self):
        bad = os.path.join(self.dir, 'bad-00000-of-00001.tfrecord')
        with open(bad, 'w') as f:
            f.write('this is not a TFRecord file at all')
        out = cli.run('train.py', '--flagfile=configs/smoke.flags', f'--train_records={bad}',
                      f'--model_dir={self.dir}/bad')
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(bad, out.stderr)
        self.assertNotIn('Traceback', out.stderr)

    def test_empty_dataset_is_a_clear_error(self):
        empty = fixtures.write_tiny_shards(os.path.join(self.dir, 'empty'), [], 'train', 1)
        out = cli.run('train.py', '--flagfile=configs/smoke.flags', f'--train_records={empty}',
                      f'--model_dir={self.dir}/empty_model')
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('dataset is empty', out.stderr)
        self.assertNotIn('Traceback', out.stderr)

    def test_unknown_flag_value_is_rejected(self):
        out = cli.run('train.py', '--flagfile=configs/smoke.flags', '--precision=float8',
                      f'--model_dir={self.dir}/x')
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('precision', out.stderr)
        self.assertNotIn('Traceback', out.stderr)

    def test_bad_stage_flags_are_a_clear_error(self):
        for flag in ('--stage_channels=32,64', '--stage_units=2,x,2', '--stage_units=2,0,2'):
            out = cli.run('train.py', '--flagfile=configs/smoke.flags', flag,
                          f'--train_records={self.train}', f'--model_dir={self.dir}/stages')
            self.assertNotEqual(out.returncode, 0, flag)
            self.assertIn('stage_', out.stderr, flag)
            self.assertNotIn('Traceback', out.stderr, flag)
        self.assertFalse(os.path.exists(f'{self.dir}/stages/model_config.json'))

    def test_bad_crop_and_face_size_flags_are_a_clear_error(self):
        for flag, name in (('--min_crop=0', 'min_crop'), ('--max_crop=0.1', 'max_crop'),
                           ('--train_min_face=-1', 'train_min_face'),
                           ('--val_min_face=-2', 'val_min_face'),
                           ('--val_max_side=-1', 'val_max_side'),
                           ('--val_variants=grey,sepia', 'val_variants'),
                           ('--strides=8,16', 'strides'), ('--strides=4,eight', 'strides')):
            out = cli.run('train.py', '--flagfile=configs/smoke.flags', flag,
                          f'--train_records={self.train}', f'--model_dir={self.dir}/sizes')
            self.assertNotEqual(out.returncode, 0, flag)
            self.assertIn(name, out.stderr, flag)
            self.assertNotIn('Traceback', out.stderr, flag)
        self.assertFalse(os.path.exists(f'{self.dir}/sizes'))

    def test_validation_at_own_size_picks_the_best_checkpoint(self):
        model_dir = os.path.join(self.dir, 'own_size')
        out = self._train(model_dir, '--val_max_side=96', '--val_min_face=4')
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        line = [l for l in out.stdout.splitlines() if l.startswith('validation at step 2')][0]
        self.assertIn('ap50_letterbox', line)
        best = json.load(open(os.path.join(model_dir, 'best', 'best.json')))
        self.assertIn(f"ap50 {best['ap50']:.4f}", line)
        self.assertIn('ap50_letterbox', best)


class OwnSizeApTest(tf.test.TestCase):
    """validation.own_size_ap scores detections in each photo's own pixels (an oracle stands in for
    the network: it answers with chosen boxes for each photo size)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        # A 200x300 photo with a 60x80 face and a 12x12 one, and a face-free 120x160 photo.
        big, small = [40, 30, 120, 90], [150, 200, 162, 212]  # pixel yxyx
        boxes = np.array([big, small], np.float32) / [200, 300, 200, 300]
        cls.records = fixtures.write_tiny_shards(
            os.path.join(cls.dir, 'rec'),
            [fixtures.make_face_record(boxes, height=200, width=300, source_id='a'),
             fixtures.make_face_record([], height=120, width=160, source_id='b')], 'val', 1)
        cls.big_xywh, cls.small_xywh = [30, 40, 60, 80], [200, 150, 12, 12]

    def _ap(self, answers, min_face):
        def detect(image):
            boxes, scores = answers.get(tuple(image.shape[1:3]), ([], []))
            k = len(boxes)
            return {'boxes': np.asarray(boxes, np.float32).reshape(1, k, 4),
                    'scores': np.asarray(scores, np.float32).reshape(1, k),
                    'num_detections': np.array([k])}
        return validation.own_size_ap(detect, self.records, min_face)

    def test_faces_found_in_the_photos_pixels_score_one(self):
        answers = {(200, 300): ([self.big_xywh, self.small_xywh], [0.9, 0.8])}
        self.assertAllClose(self._ap(answers, min_face=10), 1.0)

    def test_min_face_counts_the_photos_pixels(self):
        answers = {(200, 300): ([self.big_xywh], [0.9])}
        # The 12-px face counts at min_face 10 (about 3 px in a 64-px letterbox) and
        # is missed; at min_face 13 it is ignored.
        self.assertAllClose(self._ap(answers, min_face=10), 0.5)
        self.assertAllClose(self._ap(answers, min_face=13), 1.0)

    def test_false_positive_on_the_face_free_photo_ranks_first(self):
        answers = {(200, 300): ([self.big_xywh, self.small_xywh], [0.8, 0.7]),
                   (120, 160): ([[10, 10, 40, 40]], [0.9])}
        # Precision 0, 1/2, 2/3 at recall 0, 1/2, 1: interpolated AP = 2/3.
        self.assertAllClose(self._ap(answers, min_face=10), 2 / 3)


class VariantValidationTest(tf.test.TestCase):
    """validation with val_variants: ap50/<variant> per variant, ap50_mean their mean with ap50,
    and _keep_best picks checkpoints by ap50_mean."""

    def test_ap50_mean_is_the_mean_of_the_reported_aps(self):
        directory = tempfile.mkdtemp()
        # 256-px photos with 64-100 px faces, so that ``large`` keeps them.
        records = [fixtures.make_face_record([[0.3, 0.3, 0.3 + f, 0.3 + f]], height=256,
                                             width=256, source_id=f'v/{i}', seed=i)
                   for i, f in enumerate((0.25, 0.3, 0.4))]
        records.append(fixtures.make_face_record([], height=256, width=256, source_id='v/3'))
        val = fixtures.write_tiny_shards(directory, records, 'val', 1)
        config = DetectorConfig(stem_channels=8, stage_channels=(16, 24, 32), neck_channels=16,
                                stage_units=(1, 1, 1), image_size=64)
        s = loop.TrainSettings(train_records=val, model_dir=directory, config=config,
                               val_records=val, batch_size=2,
                               val_variants=('grey', 'jpeg', 'large'))
        metrics = validation.make_validator(build_detector(config), s)()
        aps = [metrics[k] for k in ('ap50', 'ap50/grey', 'ap50/jpeg', 'ap50/large')]
        self.assertTrue(all(np.isfinite(aps)))
        self.assertAllClose(metrics['ap50_mean'], np.mean(aps))
        self.assertNotIn('ap50/blur', metrics)

    def test_keep_best_goes_by_ap50_mean(self):
        model_dir = tempfile.mkdtemp()
        model = tf.keras.Sequential([tf.keras.Input([2]), tf.keras.layers.Dense(1)])
        step = tf.Variable(0, dtype=tf.int64)
        checkpoint = tf.train.Checkpoint(model=model, step=step)
        state = loop._State(model, None, None, step, tf.Variable(0.0), checkpoint)
        state.best_manager = tf.train.CheckpointManager(
            checkpoint, os.path.join(model_dir, 'best'), max_to_keep=1)

        def best_step(step_number, ap50, ap50_mean):
            loop._keep_best(state, model_dir, step_number,
                            {'loss': 1.0, 'ap50': ap50, 'ap50_mean': ap50_mean})
            return json.load(open(os.path.join(model_dir, 'best', 'best.json')))['step']

        self.assertEqual(best_step(1, 0.5, 0.4), 1)
        self.assertEqual(best_step(2, 0.9, 0.3), 1)  # plain AP up, the mean down: kept 1
        self.assertEqual(best_step(3, 0.2, 0.5), 3)


if __name__ == '__main__':
    tf.test.main()
