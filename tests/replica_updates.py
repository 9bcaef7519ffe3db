"""Runs training.loop.update on 1 or 2 logical CPU devices and prints what it did, as JSON.
A helper for tests/test_replica_updates.py (the logical devices need a fresh process).

  python tests/replica_updates.py --replicas=2 --case=clip
"""

import json
import sys

import numpy as np


def main(replicas, case):
    import keras
    import tensorflow as tf
    from training import devices, loop

    strategy = devices.make_strategy('mirrored' if replicas > 1 else 'default', replicas)
    # One weight vector; replica r of R sees its share of one global batch of 4 rows.
    rows = np.array([[30.0, 0.0], [0.0, 40.0], [6.0, 8.0], [12.0, -4.0]], np.float32)
    with strategy.scope():
        w = keras.Variable(np.zeros(2, np.float32), name='w')
        inner = keras.optimizers.SGD(learning_rate=1.0)
        optimizer = keras.optimizers.LossScaleOptimizer(inner) if case == 'overflow' else inner
        optimizer.build([w])

    def step_fn(x):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        with tf.GradientTape() as tape:
            mean = tf.reduce_sum(tf.reduce_mean(x, 0) * w)  # this replica's mean loss
            loss = mean
            if case == 'overflow':
                # Replica 1's gradient is not finite (sqrt at 0); its loss is.
                loss += tf.cast(replica == 1, tf.float32) * tf.sqrt(tf.abs(w[0]))
            loss = loss / replicas
            if case == 'overflow':
                loss = optimizer.scale_loss(loss)
        return loop.update(optimizer, tape.gradient(loss, [w]), mean, [w])

    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(rows).batch(len(rows)))

    @tf.function
    def run(x):
        applied = strategy.run(step_fn, args=(x,))
        return [tf.cast(a, tf.int32) for a in strategy.experimental_local_results(applied)]

    applied = run(next(iter(dataset)))
    values = [np.asarray(v).tolist() for v in strategy.experimental_local_results(w.value)]
    out = {'applied': [int(a) for a in applied], 'w': values,
           'iterations': int(optimizer.iterations.numpy())}
    if case == 'overflow':
        out['loss_scale'] = float(optimizer.dynamic_scale.numpy())
    print(json.dumps(out))


if __name__ == '__main__':
    args = dict(a.lstrip('-').split('=') for a in sys.argv[1:])
    main(int(args['replicas']), args['case'])
