r"""Starts tf.data service servers that run training input pipelines for train.py.

Usage:
  # one CPU machine: a dispatcher and 4 workers in one process
  python data_service.py --port=5050 --workers=4
  python train.py --flagfile=... --data_service=grpc://THAT_HOST:5050

  # many machines: the dispatcher on one, workers on each of the others
  python data_service.py --port=5050 --workers=0
  python data_service.py --dispatcher=DISPATCHER_HOST:5050 --workers=8 \
      --worker_port=5051 --worker_host=$(hostname)

Workers read the shards at the paths train.py was given, so every worker must see the same
files (a shared disk, or gs:// paths). BUILD.md says how many worker cores one GPU needs.
Stop with Ctrl-C.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags  # noqa: E402

_PORT = flags.DEFINE_integer('port', 5050, 'Dispatcher port (when this process runs the dispatcher).')
_DISPATCHER = flags.DEFINE_string(
    'dispatcher', None, 'host:port of a running dispatcher; given, this process runs workers only.')
_WORKERS = flags.DEFINE_integer('workers', 1, 'Workers in this process (each runs pipelines on '
                                'all of its cores; more than one helps only past ~16 cores).',
                                lower_bound=0)
_WORKER_PORT = flags.DEFINE_integer('worker_port', 0, 'First worker port (0: free ports).')
_WORKER_HOST = flags.DEFINE_string('worker_host', 'localhost',
                                   'Host name trainers reach this machine\'s workers at.')
_WORK_DIR = flags.DEFINE_string('work_dir', None, 'Dispatcher journal folder: a restarted '
                                'dispatcher recovers its state from it.')


def main(argv):
    del argv
    from training import data_service
    servers = []
    dispatcher = _DISPATCHER.value
    if not dispatcher:
        server = data_service.start_dispatcher(_PORT.value, _WORK_DIR.value)
        servers.append(server)
        dispatcher = f'localhost:{_PORT.value}'
        print(f'dispatcher at grpc://{_WORKER_HOST.value}:{_PORT.value}: '
              f'train.py --data_service=grpc://{_WORKER_HOST.value}:{_PORT.value}', flush=True)
    for i in range(_WORKERS.value):
        port = _WORKER_PORT.value + i if _WORKER_PORT.value else 0
        servers.append(data_service.start_worker(dispatcher, port, f'{_WORKER_HOST.value}:%port%'))
        print(f'worker {i + 1}/{_WORKERS.value} registered with {dispatcher}', flush=True)
    if not servers:
        sys.exit('data_service.py: error: nothing to run: give --workers or run the dispatcher')
    try:
        servers[0].join()
    except KeyboardInterrupt:
        print('stopped', flush=True)


if __name__ == '__main__':
    app.run(main)
