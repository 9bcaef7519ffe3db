"""training.summaries reads a run's validation scalars (benchmarks/scaling.py); plots.write_line_chart_png draws them."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from evaluation import plots
from training import summaries


class ScalingTest(tf.test.TestCase):

    def test_reads_the_validation_scalars_and_draws_them(self):
        log_dir = tempfile.mkdtemp()
        with tf.summary.create_file_writer(log_dir).as_default():
            for step, ap in ((100, 0.2), (200, 0.4)):
                tf.summary.scalar('val/ap50', ap, step=step)
                tf.summary.scalar('val/loss', 9.0, step=step)
        found = summaries.read_scalars(log_dir, ['val/ap50', 'val/ap50_mean'])
        self.assertEqual(set(found['val/ap50']), {100, 200})
        self.assertAllClose(found['val/ap50'][200], 0.4)
        self.assertEqual(found['val/ap50_mean'], {})
        path = os.path.join(log_dir, 'chart.png')
        plots.write_line_chart_png(path, {'ap': ([3200, 6400], [0.2, 0.4])}, 'images', 'AP', 't')
        pixels = np.asarray(Image.open(path).convert('RGB'))
        self.assertTrue((np.abs(pixels.astype(int) - plots._COLOURS[0]).sum(-1) < 10).any())


if __name__ == '__main__':
    tf.test.main()
