#!/usr/bin/env bash
# Tk-Instruct's protocol: greedy decoding of the "def + 2 pos" encoding on the English
# test tasks (first 100 instances each), then ROUGE-L / exact match per category.
#   bash eval/tk_instruct.sh CHECKPOINT NI_PREP_DIR OUT_DIR   (NI_PREP_DIR: `t5x prep ni --out`)
set -euo pipefail
checkpoint=${1:?checkpoint}; ni=${2:?t5x prep ni output folder}; out=${3:?output folder}
NI_DATA_DIR="$ni" t5x infer --gin_file=runs/infer.gin \
  --gin.CHECKPOINT_PATH="\"$checkpoint\"" --gin.INFER_OUTPUT_DIR="\"$out\"" \
  --gin.MIXTURE_OR_TASK_NAME='"ni_def_pos2"' \
  --gin.TASK_FEATURE_LENGTHS="{'inputs': 1024, 'targets': 128}" \
  --gin.decoding.DecodeOptions.max_decode_length=128
t5x score ni --predictions "$out/ni_def_pos2-predict.jsonl-00000-of-00001" --references "$ni/references.jsonl"
