"""The tf.data service: input pipelines run on CPU machines of their own, fed to trainers.

A dispatcher hands out the dataset's graph; each worker runs it (reading the shards from the
path the trainer gave, so every worker must see the same files: a shared disk or gs://)
and streams finished batches to the trainers. ``data_service.py`` at the repository root
starts them; ``train.py --data_service=grpc://HOST:PORT`` uses them.
"""

import socket
import threading

import tensorflow as tf

PROTOCOL = 'grpc'


class ServiceLost(ValueError):
    """No batch came from the tf.data service in time: its dispatcher or every worker is
    gone, or it was never there. The message names the address."""


def check_reachable(address, timeout_s=10.0):
    """Raises ServiceLost when nothing listens at the dispatcher's grpc://host:port."""
    host, _, port = address.split('://', 1)[-1].rpartition(':')
    try:
        socket.create_connection((host or 'localhost', int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise ServiceLost(f'no tf.data service dispatcher at {address} ({e}): start one there '
                          '(data_service.py) or leave out --data_service') from None


def next_within(iterator, timeout_s, address):
    """next(iterator), or ServiceLost naming address when no batch comes in timeout_s (the
    service's own client waits forever for a dispatcher or workers that are gone)."""
    got = {}

    def take():
        try:
            got['batch'] = next(iterator)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            got['error'] = e

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    taker.join(timeout_s)
    if taker.is_alive():
        raise ServiceLost(f'no batch from the tf.data service at {address} in {timeout_s:g} s: '
                          'its dispatcher or every worker is gone. Restart it (data_service.py) '
                          'and rerun the same command to resume')
    if 'error' in got:
        raise got['error']
    return got['batch']


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
