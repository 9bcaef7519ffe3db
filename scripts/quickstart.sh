#!/usr/bin/env bash
# From nothing to a trained, exported face detector and a picture of its detections, on the
# embedded synthetic dataset (no download). About 10 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=3
OUT=out/quickstart
start=$(date +%s)

echo "== 1/5 records: synthetic faces -> TFRecords"
$PY preprocess/make_records.py --flagfile=configs/synthetic.flags
echo "== 2/5 training (rerun to resume; tensorboard --logdir=$OUT/model)"
$PY train.py --flagfile=configs/quickstart.flags
echo "== 3/5 export"
$PY export.py --model_dir=$OUT/model --export_dir=$OUT/saved_model
echo "== 4/5 detect on the validation images"
$PY preprocess/records_to_images.py --records='out/records/synthetic/val-*.tfrecord' \
    --output_dir=$OUT/val_images
$PY detect.py --model=$OUT/saved_model --input=$OUT/val_images/images --output=$OUT/detect \
    --score_threshold=0.05 --draw_threshold=0.3 --max_pngs=20
echo "== 5/5 evaluate (WIDER FACE protocol)"
$PY evaluate.py --detections=$OUT/detect/detections.jsonl \
    --labels=$OUT/val_images/labels.jsonl --iou_threshold=0.5 --score_threshold=0.3 \
    --pr_curve=$OUT/pr_curve.png --output_json=$OUT/metrics.json

cat <<DONE

Done in $(( $(date +%s) - start )) s. Artifacts:
  records        out/records/synthetic/ (manifest.json)
  checkpoints    $OUT/model/checkpoints, best: $OUT/model/best, logs: $OUT/model/{train,val}
  SavedModel     $OUT/saved_model
  detections     $OUT/detect/detections.jsonl and annotated PNGs in $OUT/detect/
  PR curve       $OUT/pr_curve.png, metrics: $OUT/metrics.json
Find faces in your own photos:
  .venv/bin/python detect.py --model=$OUT/saved_model --input=PHOTO_OR_FOLDER --output=out/mine
DONE
