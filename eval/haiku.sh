#!/usr/bin/env bash
# Deep Haiku's protocol: prompt "(topic =" for each topic, sample at temperature 0.8,
# then the share of 5-7-5 haiku and of haiku that use their topic words.
#   bash eval/haiku.sh CHECKPOINT TOPICS.txt OUT_DIR    (one topic per line, e.g. "dog rain")
set -euo pipefail
checkpoint=${1:?checkpoint}; topics=${2:?file of topics}; out=${3:?output folder}
mkdir -p "$out/prompts"
python3 - "$topics" "$out/prompts/haiku_topics.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], 'w') as out:
  for topic in (line.strip() for line in f if line.strip()):
    out.write(json.dumps({'inputs': f'({topic} =', 'topic': topic}) + '\n')
PY
t5x infer --gin_file=runs/infer.gin \
  --gin.CHECKPOINT_PATH="\"$checkpoint\"" --gin.INFER_OUTPUT_DIR="\"$out\"" \
  --gin.PROMPTS_FILE="\"$out/prompts/haiku_topics.jsonl\"" \
  --gin.decoding.DecodeOptions.decode='"sample"' --gin.decoding.DecodeOptions.temperature=0.8
t5x score haiku "$out/haiku_topics-predict.jsonl-00000-of-00001"
