#!/usr/bin/env bash
# The caption contest protocol: one model per cross-validation split (CHECKPOINT_PATTERN
# with {split}, e.g. gs://bucket/caption_matching_11b_split{split}), its test set
# decoded greedily, then the task's metrics averaged over the 5 splits.
#   bash eval/caption_contest.sh matching|ranking|explanation CHECKPOINT_PATTERN OUT_DIR
set -euo pipefail
task=${1:?matching, ranking or explanation}; pattern=${2:?checkpoint pattern with {split}}
out=${3:?output folder}
files=()
for split in 0 1 2 3 4; do
  t5x infer --gin_file=runs/infer.gin \
    --gin.CHECKPOINT_PATH="\"${pattern//\{split\}/$split}\"" --gin.INFER_OUTPUT_DIR="\"$out\"" \
    --gin.MIXTURE_OR_TASK_NAME="\"caption_${task}_split${split}\"" \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 256}" \
    --gin.decoding.DecodeOptions.max_decode_length=256
  files+=("$out/caption_${task}_split${split}-predict.jsonl-00000-of-00001")
done
t5x score caption --task "$task" --predictions "${files[@]}"
