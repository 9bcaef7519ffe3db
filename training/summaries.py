"""Reading a run's TensorBoard scalars back (benchmarks/scaling.py)."""

import os


def read_scalars(log_dir, tags):
    """{tag: {step: value}} from the TensorBoard event files in log_dir."""
    import tensorflow as tf
    found = {tag: {} for tag in tags}
    for name in sorted(os.listdir(log_dir)):
        if not name.startswith('events.'):
            continue
        for record in tf.data.TFRecordDataset(os.path.join(log_dir, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag in found:
                    found[value.tag][event.step] = float(tf.make_ndarray(value.tensor))
    return found
