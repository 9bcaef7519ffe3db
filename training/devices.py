"""Which devices train: the tf.distribute strategy and the compute precision for them."""

import tensorflow as tf

PRECISIONS = ('float32', 'mixed_float16', 'mixed_bfloat16')


def is_chief(task_type, task_id, cluster_tasks):
    """Whether a cluster task is the chief, which alone writes model_dir: the 'chief' task,
    or worker 0 of a cluster without one (TF's convention); a process with no task is."""
    if not task_type:
        return True
    return task_type == 'chief' or (
        task_type == 'worker' and int(task_id or 0) == 0 and 'chief' not in cluster_tasks)


def make_strategy(name, cpu_devices=1):
    """Returns the tf.distribute strategy for a --strategy flag value.

    cpu_devices > 1 splits the CPU into logical devices and hides any GPU, so tests of the
    several-replica paths run on CPUs on a GPU host too. GPUs allocate memory as they need
    it (memory growth), so several processes (the test suite's, a trainer beside a
    data-service worker) can share one; multi-worker runs all-reduce with NCCL when GPUs
    are visible (the default picks ring all-reduce, slower on GPUs).
    """
    _configure_devices(cpu_devices)
    if name == 'multi_worker':
        gpus = tf.config.list_physical_devices('GPU')
        implementation = tf.distribute.experimental.CommunicationImplementation
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=implementation.NCCL if gpus else implementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    gpus = tf.config.list_logical_devices('GPU')
    if name == 'mirrored' or (name == 'auto' and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices('CPU')]
        return tf.distribute.MirroredStrategy(devices)
    if name == 'auto' and gpus:
        # One GPU: its distributed dataset prefetches each batch onto the GPU, so the step
        # does not wait for the host-to-GPU copy (the default strategy copies in the step).
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    return tf.distribute.get_strategy()


def _configure_devices(cpu_devices):
    """Logical CPU devices (and no GPU) for cpu_devices > 1; memory growth on every GPU.
    Both must happen before TensorFlow initialises its devices; in a process that already
    did (tests), what is there is kept."""
    gpus = tf.config.list_physical_devices('GPU')
    try:
        if cpu_devices > 1:
            tf.config.set_visible_devices([], 'GPU')
            cpus = tf.config.list_physical_devices('CPU')
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        else:
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # devices already initialised in this process


def resolve_precision(name, gpu_capabilities=None):
    """(precision, why) for a --precision value; 'auto' picks by the GPUs.

    float32 on CPUs (mixed precision runs 2-5x slower there) and on GPUs older than compute
    capability 7.0 (no tensor cores); mixed_float16 on 7.x (Volta, Turing: float16 tensor
    cores, no bfloat16); mixed_bfloat16 on 8.0 and newer (Ampere, Ada, Hopper: bfloat16 has
    float32's range, so no loss scaling).

    Args:
      name: 'auto' or one of PRECISIONS.
      gpu_capabilities: list of (major, minor) per GPU; None reads the visible GPUs.
    """
    if name != 'auto':
        if name not in PRECISIONS:
            raise ValueError(f'--precision={name}: choose auto or one of {", ".join(PRECISIONS)}')
        return name, 'as given'
    if gpu_capabilities is None:
        gpu_capabilities = [
            tf.config.experimental.get_device_details(gpu).get('compute_capability', (0, 0))
            for gpu in tf.config.list_physical_devices('GPU')]
    if not gpu_capabilities:
        return 'float32', 'no GPU: float32 is fastest on CPUs'
    oldest = min(tuple(c) for c in gpu_capabilities)
    label = f'GPU compute capability {oldest[0]}.{oldest[1]}'
    if oldest >= (8, 0):
        return 'mixed_bfloat16', label
    if oldest >= (7, 0):
        return 'mixed_float16', label
    return 'float32', f'{label} (no tensor cores)'
