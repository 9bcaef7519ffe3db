#!/usr/bin/env bash
# The one-run recipe for the default model, from random weights:
# records from ../shared/data (with YuNet-n's landmarks as the teacher's), one train.py run
# of configs/default_model.flags, the export, and the model card's accuracy numbers.
# Rerun it after an interruption: the records are kept once their manifest exists, train.py
# resumes from its last checkpoint (and stops at once when it is done), the rest is redone.
# About 75 minutes on a 2-core CPU (MODEL_CARD.md); tensorboard --logdir=out/default_model.
# A longer budget: add --train_steps=N to the train.py line (benchmarks/README.md's table).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
PY=.venv/bin/python
$PY -c "import cv2" 2>/dev/null || .venv/bin/pip install -q 'opencv-python-headless>=4.8,<5'
export TF_CPP_MIN_LOG_LEVEL=3
RECORDS=out/records/shared
start=$(date +%s)

if [[ ! -f $RECORDS/manifest.json ]]; then
  echo "== records: ../shared/data -> $RECORDS"
  $PY preprocess/make_records.py --flagfile=configs/shared_records.flags
fi
echo "== train: configs/default_model.flags -> out/default_model"
$PY train.py --flagfile=configs/default_model.flags
echo "== export: out/default_model/export (copy it to models/facedet_default once it beats that)"
$PY export.py --model_dir=out/default_model --export_dir=out/default_model/export \
    --max_side=1280 --max_detections=1000 --passes=1 \
    --int8_records="$RECORDS/train-*.tfrecord"
echo "== the model card's numbers: out/default_model/robustness.json"
$PY benchmarks/robustness.py --model=out/default_model/export --records="$RECORDS/val-*.tfrecord" \
    --json=out/default_model/robustness.json
echo "Done in $(( ($(date +%s) - start) / 60 )) min: out/default_model/export (MODEL_CARD.md)"
