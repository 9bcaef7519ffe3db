#!/usr/bin/env bash
# Rebuilds the shipped model, models/facedet_default, from the real photos in ../shared/data:
# records (with YuNet-n's landmarks as the teacher's), the seven stages of
# configs/default_model/, then the export. Rerun it after an interruption: the records are
# kept once their manifest exists, a finished stage is skipped (train.py resumes each stage
# from its last checkpoint and stops at once when it is done) and the export comes last.
# About 9 hours on a 2-core CPU (MODEL_CARD.md); tensorboard --logdir=out/default_model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
PY=.venv/bin/python
$PY -c "import cv2" 2>/dev/null || .venv/bin/pip install -q opencv-python-headless
export TF_CPP_MIN_LOG_LEVEL=3
RECORDS=out/records/shared
start=$(date +%s)

if [[ ! -f $RECORDS/manifest.json ]]; then
  echo "== records: ../shared/data -> $RECORDS"
  $PY preprocess/make_records.py --flagfile=configs/shared_records.flags
fi
stages=(configs/default_model/[1-7]_*.flags)
for flagfile in "${stages[@]}"; do
  echo "== stage $(basename "$flagfile" .flags) of ${#stages[@]}"
  $PY train.py --flagfile="$flagfile"
done
echo "== export: models/facedet_default"
$PY export.py --model_dir=out/default_model/7 --export_dir=models/facedet_default \
    --max_side=1280 --max_detections=1000 --passes=1.5:0:200,0.5:100: \
    --int8_records="$RECORDS/train-*.tfrecord"
echo "Done in $(( ($(date +%s) - start) / 60 )) min: models/facedet_default (MODEL_CARD.md)"
