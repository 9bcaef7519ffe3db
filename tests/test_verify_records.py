"""preprocess/verify_records.py: every shard checked against manifest.json, every record's
checksum read; damage, truncation, missing and extra shards and a broken manifest reported."""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from preprocess import shards
from preprocess import verify_records
from tests import cli
from tests import fixtures
from tests.test_train_faults import _damage, _truncate


def _records_dir(directory, num=12, num_shards=2):
    """Fixture shards plus the manifest and per-shard counts make_records would write."""
    fixtures.write_tiny_shards(directory, fixtures.random_records(num), 'train', num_shards)
    names = [shards.shard_name('train', i, num_shards) for i in range(num_shards)]
    for i, name in enumerate(names):
        stats = shards.WriteStats(images=len(range(i, num, num_shards)))
        stats.shards = [os.path.join(directory, name)]
        shards.files.write_json(os.path.join(directory, shards.STATS_DIR, name + '.json'),
                                stats.to_dict())
    with open(os.path.join(directory, 'manifest.json'), 'w') as f:
        json.dump({'images': num, 'splits': {'train': {'images': num, 'shards': names}}}, f)
    return [os.path.join(directory, n) for n in names]


class VerifyRecordsTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.paths = _records_dir(self.dir)

    def test_intact_records_have_no_problem(self):
        problems, summary = verify_records.verify(self.dir)
        self.assertEqual(problems, [])
        self.assertEqual(summary, '2 shards, 12 of 12 records readable, 0 problems')

    def test_garbage_in_the_middle_is_named_with_offset_and_counts(self):
        _damage(self.paths[0])
        problems, _ = verify_records.verify(self.dir)
        self.assertLen(problems, 1)
        self.assertRegex(problems[0], r'^BAD train-00000-of-00002\.tfrecord: .* at offset \d+: '
                                      r'[0-5] records readable, manifest counts 6$')

    def test_truncation_is_found(self):
        _truncate(self.paths[1])
        problems, summary = verify_records.verify(self.dir)
        self.assertLen(problems, 1)
        self.assertIn('BAD train-00001-of-00002.tfrecord', problems[0])
        self.assertIn('manifest counts 6', problems[0])
        self.assertRegex(summary, r'^2 shards, (\d|1[01]) of 12 records readable, 1 problems$')

    def test_shard_cut_at_a_record_boundary_reads_fewer_than_counted(self):
        # No checksum fails: only the manifest's count shows the records are gone.
        shutil.copy(self.paths[1], self.paths[0])
        fixtures.write_tiny_shards(os.path.join(self.dir, 'short'), fixtures.random_records(2),
                                   'train', 1)
        shutil.copy(os.path.join(self.dir, 'short', 'train-00000-of-00001.tfrecord'), self.paths[0])
        problems, _ = verify_records.verify(self.dir)
        self.assertEqual(problems, ['BAD train-00000-of-00002.tfrecord: 2 records readable, '
                                    'manifest counts 6'])

    def test_missing_and_extra_shards(self):
        os.remove(self.paths[1])
        shutil.copy(self.paths[0], os.path.join(self.dir, 'train-00000-of-00003.tfrecord'))
        problems, _ = verify_records.verify(self.dir)
        self.assertEqual(problems, [
            'MISSING train-00001-of-00002.tfrecord',
            'EXTRA train-00000-of-00003.tfrecord: a shard the manifest does not name'])

    def test_split_total_other_than_the_manifests(self):
        with open(os.path.join(self.dir, 'manifest.json')) as f:
            manifest = json.load(f)
        manifest['splits']['train']['images'] = 13
        shutil.rmtree(os.path.join(self.dir, shards.STATS_DIR))  # no per-shard counts
        with open(os.path.join(self.dir, 'manifest.json'), 'w') as f:
            json.dump(manifest, f)
        problems, _ = verify_records.verify(self.dir)
        self.assertEqual(problems, ['BAD split train: 12 records readable, manifest counts 13'])

    def test_manifest_not_json_or_absent(self):
        with open(os.path.join(self.dir, 'manifest.json'), 'w') as f:
            f.write('{"splits": ')
        problems, _ = verify_records.verify(self.dir)
        self.assertLen(problems, 1)
        self.assertRegex(problems[0], r'^BAD manifest.json: .*manifest\.json is not JSON')
        os.remove(os.path.join(self.dir, 'manifest.json'))
        problems, _ = verify_records.verify(self.dir)
        self.assertIn('manifest.json does not exist', problems[0])

    def test_cli_exit_status(self):
        result = cli.run('preprocess/verify_records.py', f'--records_dir={self.dir}')
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn('OK: 2 shards, 12 of 12 records readable', result.stdout)
        _damage(self.paths[1])
        result = cli.run('preprocess/verify_records.py', f'--records_dir={self.dir}')
        self.assertEqual(result.returncode, 1, result.stderr[-2000:])
        self.assertIn('BAD train-00001-of-00002.tfrecord', result.stdout)
        self.assertIn('FAILED: 2 shards', result.stdout)
        self.assertNotIn('Traceback', result.stderr)


if __name__ == '__main__':
    tf.test.main()
