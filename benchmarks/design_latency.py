r"""Latency of candidate networks before any training: random weights, one pass at 1x,
beside an export in its default passes and YuNet-s, at 640x480 on this CPU. Not a test.

A network's time does not depend on its weights, so a design can be timed against the
latency target before hours go into training it. Each candidate is the --model export's
config with some fields changed (model/detector.DetectorConfig), exported by export.py's
own path (batch norms folded, network.tflite) into a temporary folder and run through
TFLite as detect.py runs it.

  python benchmarks/design_latency.py --model=models/facedet_default \
      --images='../shared/data/wider_face/WIDER_train/images/*/*.jpg' \
      --candidate='s4={"strides": [4, 8, 16, 32]}' \
      --candidate='slim_s4={"strides": [4, 8, 16, 32], "stage_channels": [64, 96, 160]}'

Needs OpenCV (benchmarks/requirements.txt) for YuNet-s. Prints the CPU model beside the
table: ratios move between CPUs (AVX2-only EPYCs run int8 slower than float).
"""

import glob
import json
import os
import subprocess
import sys
import tempfile

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from absl import app, flags, logging  # noqa: E402

_MODEL = flags.DEFINE_string('model', 'models/facedet_default', 'The baseline export; its config '
                             'is the starting point of every candidate.')
_CANDIDATES = flags.DEFINE_multi_string('candidate', [], 'NAME=JSON: DetectorConfig fields to '
                                        'change, e.g. s4={"strides": [4, 8, 16, 32]}.')
_IMAGES = flags.DEFINE_string('images', None, 'Glob of photos, resized to 640x480.')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 6, 'Photos to cycle through.')
_PEERS_DIR = flags.DEFINE_string('peers_dir', '../shared/peers', 'Folder of the YuNet ONNX files.')
_RUNS = flags.DEFINE_integer('runs', 60, 'Timed calls per detector.')
flags.mark_flag_as_required('images')


def cpu_model():
    out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    names = [line.split(':', 1)[1].strip() for line in out.splitlines()
             if line.startswith('Model name')]
    flags_line = next((line for line in out.splitlines() if line.startswith('Flags')), '')
    isa = [f for f in ('avx512f', 'avx512_vnni', 'avx_vnni') if f in flags_line.split()]
    return f'{names[0] if names else "unknown CPU"} ({", ".join(isa) or "AVX2 at most"})'


def export_candidate(base_info, overrides, export_dir):
    """Writes a random-weight export of the baseline config with ``overrides``; returns its
    parameter count."""
    import export as export_lib
    from model.detector import DetectorConfig, build_detector
    config = DetectorConfig.from_json(json.dumps({**base_info['config'], **overrides}))
    model = build_detector(config)
    export_lib.export(model, config, export_dir, **base_info['serving'])
    export_lib.write_model_info(export_dir, config, 'random weights', base_info['landmarks'],
                                base_info['serving'])
    return model.count_params()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import numpy as np
    from PIL import Image

    from common import quiet
    quiet.import_tensorflow()
    from benchmarks.detectors import LATENCY_SIZE, Facedet, YuNet, measure_latency
    from model.runtime import default_passes, read_info

    files = sorted(glob.glob(_IMAGES.value))[:_NUM_IMAGES.value]
    if not files:
        sys.exit(f'design_latency.py: error: no photo matches --images={_IMAGES.value}')
    images = [np.asarray(Image.open(f).convert('RGB').resize(LATENCY_SIZE)) for f in files]
    base_info = read_info(_MODEL.value)
    detectors = {'baseline, default passes': Facedet(_MODEL.value, default_passes(_MODEL.value),
                                                     runtime='tflite'),
                 'baseline, 1x': Facedet(_MODEL.value, (1.0,), runtime='tflite')}
    params = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in _CANDIDATES.value:
            name, _, overrides = spec.partition('=')
            export_dir = os.path.join(tmp, name)
            params[name] = export_candidate(base_info, json.loads(overrides), export_dir)
            detectors[name] = Facedet(export_dir, (1.0,), runtime='tflite')
        detectors['yunet_s'] = YuNet('yunet_s', os.path.join(
            _PEERS_DIR.value, 'face_detection_yunet_2023mar.onnx'))
        latency = measure_latency(detectors, images, _RUNS.value)
    yunet = latency['yunet_s'][0]
    print(f'CPU: {cpu_model()}; {_RUNS.value} calls each at 640x480, float network.tflite, '
          'detectors in turns')
    print('| network | params | ms (median) | middle half | / YuNet-s |')
    print('|---|---|---|---|---|')
    for name, (median, q1, q3) in latency.items():
        print(f'| {name} | {params.get(name, "")} | {median:.1f} | {q1:.1f}-{q3:.1f} | '
              f'{median / yunet:.2f} |')


if __name__ == '__main__':
    app.run(main)
