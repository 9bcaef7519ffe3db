"""training/devices.py's GPU settings, checked on a CPU with the GPU calls patched: memory
growth on every GPU, NCCL for multi-worker on GPUs, and --cpu_devices hiding the GPUs."""

from unittest import mock

import tensorflow as tf

from training import devices

GPUS = [tf.config.PhysicalDevice('/physical_device:GPU:0', 'GPU'),
        tf.config.PhysicalDevice('/physical_device:GPU:1', 'GPU')]


def _fake_config(gpus):
    """Patches for tf.config with `gpus` visible; returns (patches, calls made)."""
    calls = []
    cpus = tf.config.list_physical_devices('CPU')
    patches = [
        mock.patch.object(tf.config, 'list_physical_devices',
                          lambda kind=None: gpus if kind == 'GPU' else cpus),
        mock.patch.object(tf.config.experimental, 'set_memory_growth',
                          lambda device, on: calls.append(('memory_growth', device.name, on))),
        mock.patch.object(tf.config, 'set_visible_devices',
                          lambda devices, kind=None: calls.append(('visible', kind, devices))),
        mock.patch.object(tf.config, 'set_logical_device_configuration',
                          lambda device, config: calls.append(('logical', len(config)))),
    ]
    return patches, calls


class DevicesTest(tf.test.TestCase):

    def _configure(self, gpus, cpu_devices):
        patches, calls = _fake_config(gpus)
        for p in patches:
            p.start()
        try:
            devices._configure_devices(cpu_devices)
        finally:
            for p in patches:
                p.stop()
        return calls

    def test_memory_growth_on_every_gpu(self):
        calls = self._configure(GPUS, 1)
        self.assertEqual(calls, [('memory_growth', g.name, True) for g in GPUS])

    def test_cpu_devices_hide_the_gpus(self):
        calls = self._configure(GPUS, 2)
        self.assertEqual(calls, [('visible', 'GPU', []), ('logical', 2)])

    def test_no_gpu_no_gpu_calls(self):
        self.assertEqual(self._configure([], 1), [])

    def _multi_worker_options(self, gpus):
        made = {}

        def strategy(**kwargs):
            made.update(kwargs)
            return 'strategy'

        patches, _ = _fake_config(gpus)
        patches.append(mock.patch.object(tf.distribute, 'MultiWorkerMirroredStrategy', strategy))
        for p in patches:
            p.start()
        try:
            self.assertEqual(devices.make_strategy('multi_worker'), 'strategy')
        finally:
            for p in patches:
                p.stop()
        return made['communication_options'].implementation

    def test_one_gpu_gets_its_own_device_strategy(self):
        # OneDeviceStrategy's datasets prefetch to the GPU; the default strategy's do not.
        gpu = [tf.config.LogicalDevice('/device:GPU:0', 'GPU')]
        patches, _ = _fake_config(GPUS[:1])
        patches.append(mock.patch.object(tf.config, 'list_logical_devices',
                                         lambda kind=None: gpu if kind == 'GPU' else []))
        patches.append(mock.patch.object(tf.distribute, 'OneDeviceStrategy',
                                         lambda device: ('one_device', device)))
        for p in patches:
            p.start()
        try:
            self.assertEqual(devices.make_strategy('auto'), ('one_device', '/device:GPU:0'))
        finally:
            for p in patches:
                p.stop()
        self.assertIs(devices.make_strategy('auto'), tf.distribute.get_strategy())  # no GPU

    def test_multi_worker_all_reduces_with_nccl_on_gpus(self):
        kinds = tf.distribute.experimental.CommunicationImplementation
        self.assertEqual(self._multi_worker_options(GPUS), kinds.NCCL)
        self.assertEqual(self._multi_worker_options([]), kinds.AUTO)


if __name__ == '__main__':
    tf.test.main()
