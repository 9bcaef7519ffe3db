"""Output folders: checked before any work (writable, enough free space) and claimed by one
writer at a time (a lock file), shared by make_records.py, train.py and export.py.

| check | how | message |
|---|---|---|
| writable | create and delete a temporary file in it | `DIR is not writable (...)` |
| free space | shutil.disk_usage | `DIR has only X GB free, needs --min_free_gb=Y` |
| one writer | `DIR/.lock` made with O_CREAT|O_EXCL, removed at exit | names the holder's pid, host, command |

A folder the lock created is removed again at exit when the run left it empty (a run
refused for its flags leaves nothing behind).

A lock whose pid is not alive on this host (a killed run) is taken over, with a printed line.
Remote paths (``gs://``) are not checked or locked.
"""

import atexit
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile

LOCK_FILE = '.lock'


class OutputDirError(Exception):
    """A folder that cannot be written or is held by another writer; the message says why."""


def _is_remote(path):
    return '://' in path


def _existing_parent(path):
    """path, or its nearest existing parent (the folder it will be created in)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_output_dir(path, min_free_gb=1.0):
    """Raises OutputDirError unless path (or the parent it will be created in) is a writable
    folder with at least min_free_gb GB free."""
    if _is_remote(path):
        return
    folder = _existing_parent(path)
    if not os.path.isdir(folder):
        raise OutputDirError(f'{path}: {folder} is not a folder')
    try:
        fd, probe = tempfile.mkstemp(prefix='.write_probe_', dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputDirError(f'{folder} is not writable ({e.strerror})') from None
    free_gb = shutil.disk_usage(folder).free / 1e9
    if free_gb < min_free_gb:
        raise OutputDirError(f'{folder} has only {free_gb:.1f} GB free, needs '
                             f'--min_free_gb={min_free_gb:g}')


def _holder(path):
    """The lock's contents as a dict ({} when unreadable or half-written)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _is_stale(holder):
    """A lock of this host whose process has ended (a half-written lock is not stale)."""
    pid = holder.get('pid')
    return holder.get('host') == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def _create(path):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, 'w') as f:
        json.dump({'pid': os.getpid(), 'host': socket.gethostname(),
                   'command': shlex.join(sys.argv)}, f)


def claim(folder):
    """Creates folder/.lock for this process (removed at exit); returns its path.

    Raises OutputDirError naming the holder when another live process holds it.
    """
    if _is_remote(folder):
        return None
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    for _ in range(2):
        try:
            _create(path)
            atexit.register(release, path, created)
            return path
        except FileExistsError:
            holder = _holder(path)
        if holder.get('pid') == os.getpid() and holder.get('host') == socket.gethostname():
            return path  # this process claimed it already (main() run twice in one process)
        if not _is_stale(holder):
            break
        print(f'taking over the stale lock {path} of pid {holder["pid"]} on {holder["host"]} '
              f'(no longer running): {holder.get("command", "?")}', file=sys.stderr)
        os.remove(path)
    raise OutputDirError(
        f'{folder} is in use: {path} is held by pid {holder.get("pid", "?")} on host '
        f'{holder.get("host", "?")} running: {holder.get("command", "?")}. Wait for it, or '
        'delete the lock if that process is gone')


def release(path, remove_empty_folder=False):
    """Removes this process's lock file (leaves another process's alone), and its folder
    when claim created it and the run left nothing else there (it failed on its input)."""
    if not path or _holder(path).get('pid') != os.getpid():
        return
    try:
        os.remove(path)
        if remove_empty_folder:
            os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # gone already, or the folder holds the run's output
