#!/usr/bin/env bash
# CoPoet's protocol: 5 sampled runs (top-k 5, temperature 0.7, no repeated bigrams) on
# the three test sets, then the paper's success rate (mean over runs with a 95% CI).
#   bash eval/copoet.sh CHECKPOINT OUT_DIR      (COPOET_DATA_DIR names the test sets)
set -euo pipefail
checkpoint=${1:?checkpoint (MODEL_DIR, checkpoint_<step>, HF folder)}; out=${2:?output folder}
t5x infer --gin_file=runs/infer.gin \
  --gin.CHECKPOINT_PATH="\"$checkpoint\"" --gin.INFER_OUTPUT_DIR="\"$out\"" \
  --gin.MIXTURE_OR_TASK_NAME='"copoet"' --gin.TASK_FEATURE_LENGTHS="{'inputs': 64, 'targets': 64}" \
  --gin.decoding.DecodeOptions.decode='"sample"' --gin.decoding.DecodeOptions.top_k=5 \
  --gin.decoding.DecodeOptions.temperature=0.7 --gin.decoding.DecodeOptions.no_repeat_ngram_size=2 \
  --num_runs=5
for test_set in ki_ke ki_ue compositional; do
  t5x score copoet "$out"/copoet_${test_set}-predict-run?.jsonl-00000-of-00001 | tail -n 1 | sed "s/^/$test_set: /"
done
