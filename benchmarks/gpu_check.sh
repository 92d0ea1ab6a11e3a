#!/usr/bin/env bash
# The GPU checks (issues 4, 5 and 9) in one run, on a lent GPU machine with no network. Expects, beside the repo:
#   .whl/            wheels of sentence-transformers 6.2, datasets (+ dill, multiprocess), pytest (+ pluggy,
#                    iniconfig); .whl/ds4/ an older datasets
#   .device-data/    ../shared's layout: models/splade-tiny, data/unsup/train_40k.txt, data/senteval
# Usage: bash benchmarks/gpu_check.sh OUT_DIR [syncs] [recipes] [throughput] [profile] [levers]   (default: all five)
set -uo pipefail
OUT=${1:-output/gpu}
STAGES=${*:2}
STAGES=${STAGES:-syncs recipes throughput profile levers}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
if ! python3 -c "import datasets; datasets.Dataset.from_dict({'a': [1]})" 2>/dev/null; then
  echo "datasets 5 does not run with this pyarrow; using the older datasets wheel"
  rm -rf /tmp/site/datasets /tmp/site/datasets-*; python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/ds4/*.whl
fi
python3 -c "import torch, transformers, sentence_transformers, datasets, pyarrow; print('torch', torch.__version__, 'transformers', transformers.__version__, 'st', sentence_transformers.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, torch.cuda.get_device_name())"
D=.device-data
S=$D/data/senteval
if [[ $STAGES == *syncs* ]]; then
echo "=== no host-device synchronisation in a SimCSELoss training step (tests/test_syncs.py)"
python3 -m pytest -q -p no:cacheprovider tests/test_syncs.py 2>&1 | tail -5
fi
if [[ $STAGES == *recipes* ]]; then
# A randomly initialised bert-base-sized encoder (no hub here), with the bert-base-uncased tokenizer of splade-tiny.
python3 - <<'PY'
import shutil, torch
from transformers import BertConfig, BertModel
torch.manual_seed(0)
BertModel(BertConfig()).save_pretrained(".device-data/models/bert-base-random")
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(f".device-data/models/splade-tiny/{name}", f".device-data/models/bert-base-random/{name}")
PY
COMMON=(--train-file $D/data/unsup/train_40k.txt --senteval-dir $S --max-steps 250 --eval-steps 125 --eval-batch-size 256)
echo "=== unsup recipe, splade-tiny, GPU"
python3 recipes/unsup_wiki.py --model $D/models/splade-tiny --lr 3e-4 "${COMMON[@]}" --output-dir "$OUT/unsup-splade" 2>&1 | grep -v "it/s\]" | tail -4
echo "=== unsup recipe, random bert-base, GPU"
python3 recipes/unsup_wiki.py --model $D/models/bert-base-random --lr 3e-5 "${COMMON[@]}" --output-dir "$OUT/unsup-bert" 2>&1 | grep -v "it/s\]" | tail -4
python3 - "$OUT" <<'PY'
import json, sys
for name in ("unsup-splade", "unsup-bert"):
    m = json.load(open(f"{sys.argv[1]}/{name}/metrics.json"))
    print(name, "device", m["device"], "train_seconds", m["train_seconds"], "steps/s incl. 2 dev evals",
          round(250 / m["train_seconds"], 2), "test eval s", m["test_eval_seconds"], "table", m["test"])
PY
fi
if [[ $STAGES == *throughput* ]]; then
echo "=== throughput, bf16"
python3 benchmarks/train_throughput.py --device cuda --dtype bf16 --batch-sizes 64 512 --repeats 10 --warmup 3 \
  --cached-models splade-tiny bert-base --shared-dir $D --senteval-dir $S --scratch /tmp/bench --output "$OUT/throughput.json" 2>&1 | grep -v "Loading weights\|LOAD REPORT\|UNEXPECTED\|MISSING\|^---\|^Key\|^Notes\|^- \|^$"
fi
if [[ $STAGES == *profile* ]]; then
echo "=== profile of one SimCSELoss step, bert-base, batch 64"
python3 benchmarks/train_throughput.py --device cuda --dtype bf16 --models bert-base --batch-sizes 64 --repeats 3 \
  --cached-models --profile --shared-dir $D --senteval-dir $S --scratch /tmp/bench > "$OUT/profile.txt" 2>&1
grep -A 30 "Self CPU %" "$OUT/profile.txt" | head -40
fi
if [[ $STAGES == *levers* ]]; then
echo "=== recipe path against the plain loop, whole runs (benchmarks/recipe_speed.py --device cuda)"
python3 benchmarks/recipe_speed.py --device cuda --tiny-steps 625 --bert-steps 500 --output "$OUT/recipe_speed.json" 2>/dev/null | tail -12
echo "=== the recipe's training path, 300 steps of a random bert-base-sized model, each lever flipped on its own"
python3 benchmarks/recipe_speed.py --device cuda --tiny-steps 0 --bert-steps 300 --eval-steps 1000 \
  --levers compile compile+compile-mode=reduce-overhead attention=eager amp=fp16 amp=none no-tokenize-once \
  --output "$OUT/levers.json" 2>/dev/null | tail -12
fi
