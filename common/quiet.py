"""TensorFlow's start-up notices kept out of the entry points' output; everything else kept.

Importing TensorFlow 2.21 prints, twice (two of its libraries each log before absl's C++
logging is set up, and TF_CPP_MIN_LOG_LEVEL does not reach that logger), lines such as
"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
"... port.cc:153] oneDNN custom operations are on ..." and "... cudart_stub.cc:31] Could not
find cuda drivers ...". TFLite's C++ logger prints "INFO: Created TensorFlow Lite XNNPACK
delegate for CPU." for each interpreter, and has no setting to stop it. Neither has a Python
API, so the entry points wrap the few calls that print them in ``drop_notices``: fd 2 goes
to a temporary file during the call, and afterwards every line of it that is not one of
``NOTICES`` is written to stderr, so errors, warnings and tracebacks still show.

On a machine without an NVIDIA device, the CUDA platform's first use (device listing, or the
first op) logs "E0000 ... cuda_platform.cc:52] failed call to cuInit: ... (303)" at ERROR
level, which TF_CPP_MIN_LOG_LEVEL=2 keeps and which comes after the import, so
``import_tensorflow`` also lists the devices inside the capture and drops that line there
(``NO_GPU_NOTICES``). Where /dev/nvidia* exists the line is a real fault and is kept.

| Notice | Printed by | Dropped where |
|---|---|---|
| absl pre-init warning, oneDNN, cuda drivers, CPU features | ``import tensorflow`` | ``import_tensorflow()``, first thing in each entry point |
| cuInit failure (no NVIDIA device only) | the CUDA platform's first device listing | ``import_tensorflow()`` |
| XNNPACK delegate | ``tf.lite.Interpreter`` | model/runtime.py's interpreter creation |
| "NodeDef mentions attribute Truncate ... Op<name=Identity" (E0000, from the converter's own graph rewrite; the file is right) | ``TFLiteConverter.convert()`` | export.py's conversions (``CONVERTER_NOTICES``) |
"""

import contextlib
import glob
import os
import re
import sys
import tempfile

NOTICES = re.compile(
    r'All log messages before absl::InitializeLog\(\) is called are written to STDERR'
    r'|port\.cc:\d+\] oneDNN custom operations are on'
    r'|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine'
    r'|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized'
    r'|^To enable the following instructions: .* rebuild TensorFlow'
    r'|^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$')
NO_GPU_NOTICES = re.compile(r'cuda_platform\.cc:\d+\] failed call to cuInit: ')
CONVERTER_NOTICES = re.compile(r'node_def_util\.cc:\d+\] NodeDef mentions attribute Truncate '
                               r'which is not in the op definition: Op<name=Identity;')


@contextlib.contextmanager
def drop_notices(extra=None):
    """Runs the block with fd 2 captured, then writes its lines but NOTICES (and ``extra``,
    a compiled pattern) to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode('utf-8', errors='replace')
            kept = [line for line in text.splitlines(keepends=True)
                    if not _is_notice(line.rstrip('\n'), extra)]
            sys.stderr.write(''.join(kept))
            sys.stderr.flush()


def _is_notice(line, extra):
    return bool(NOTICES.search(line) or (extra is not None and extra.search(line)))


def has_nvidia_device():
    """Whether the kernel shows an NVIDIA device node (/dev/nvidia0, ...)."""
    return bool(glob.glob('/dev/nvidia[0-9]*'))


def import_tensorflow():
    """Imports TensorFlow and lists its devices without their start-up notices
    (TF_CPP_MIN_LOG_LEVEL=2 unless set, for the C++ messages that honour it); returns the module."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    with drop_notices(None if has_nvidia_device() else NO_GPU_NOTICES):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        tf.config.list_physical_devices()  # the CUDA platform starts here, inside the capture
    return tf
