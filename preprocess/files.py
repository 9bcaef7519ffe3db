"""File access of the record pipeline through ``tf.io.gfile``, so paths may be ``gs://``.

Readers, the shard writers and the manifest use these instead of ``open`` / ``os.path``:
local paths work as before, and a bucket (``gs://``, built into TensorFlow; others with
tensorflow-io) works for inputs and outputs alike, on one machine or on Beam workers.
"""

import io
import json
import os

import tensorflow as tf


def absolute(path: str) -> str:
    """``os.path.abspath`` for local paths; URLs (``gs://...``) are already absolute."""
    return path if '://' in path else os.path.abspath(path)


def exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def isdir(path: str) -> bool:
    return tf.io.gfile.isdir(path)


def listdir(folder: str):
    """Sorted names in ``folder`` (sub-folders without a trailing slash)."""
    return sorted(name.rstrip('/') for name in tf.io.gfile.listdir(folder))


def walk(folder: str):
    """(folder, subfolders, files) for ``folder`` and each folder below it, as ``os.walk``."""
    return tf.io.gfile.walk(folder)


def read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, 'rb') as f:
        return f.read()


def read_text(path: str) -> str:
    """The file as UTF-8 text; undecodable bytes become U+FFFD (a reader then names the line)."""
    return read_bytes(path).decode('utf-8', errors='replace')


def open_text(path: str) -> io.StringIO:
    """The file as text lines (universal newlines, as ``open``), read whole: annotation files."""
    return io.StringIO(read_text(path), newline=None)


def write_json(path: str, value, **dump_args):
    """Writes ``value`` as JSON to a temporary file renamed over ``path``: readers never see half a file."""
    tf.io.gfile.makedirs(os.path.dirname(path) or '.')
    tmp = f'{path}.tmp'
    with tf.io.gfile.GFile(tmp, 'w') as f:
        f.write(json.dumps(value, **dump_args))
    tf.io.gfile.rename(tmp, path, overwrite=True)
