"""The tf.data service: input pipelines run on CPU machines of their own, fed to trainers.

A dispatcher hands out the dataset's graph; each worker runs it (reading the shards from the
path the trainer gave, so every worker must see the same files: a shared disk or gs://)
and streams finished batches to the trainers. ``data_service.py`` at the repository root
starts them; ``train.py --data_service=grpc://HOST:PORT`` uses them.
"""

import tensorflow as tf

PROTOCOL = 'grpc'


def distribute(dataset, address):
    """Runs everything in ``dataset`` on the service's workers; the trainer only receives.

    Each worker runs its own copy of the (repeated, shuffled) pipeline and the trainer takes
    batches from all of them in turn ('parallel_epochs'), so adding workers adds throughput
    and a worker that is lost costs only its share.
    """
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.OFF,
        service=address))


def start_dispatcher(port=0, work_dir=None):
    """Starts a dispatcher; port 0 picks a free one. Returns the server (target, join())."""
    return tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=port, protocol=PROTOCOL,
                                                      work_dir=work_dir,
                                                      fault_tolerant_mode=bool(work_dir)))


def start_worker(dispatcher_address, port=0, worker_address=None):
    """Starts a worker registered with the dispatcher at host:port (no protocol prefix).

    worker_address: host:port the dispatcher and trainers reach this worker at; '%port%'
    stands for the port it got (default 'localhost:%port%', right only on one machine).
    """
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher_address, port=port, protocol=PROTOCOL,
        worker_address=worker_address)
    return tf.data.experimental.service.WorkerServer(config)


def address_of(server):
    """'host:port' of a server from its target 'grpc://host:port'."""
    return server.target.split('://', 1)[-1]
