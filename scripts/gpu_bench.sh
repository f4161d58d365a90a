#!/usr/bin/env bash
# The GPU benchmark: 13B-shape dummy weights in NF4 + a random LoRA, the model card's sequential generate vs the
# batching engine at 1, 8 and 32 concurrent requests, 128 new tokens each. Needs only the repo and pip wheels
# (no network): wheels in .whl/ are installed into /tmp/site first when present. Writes $OUT/gpu_bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.bench}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    [ -d /tmp/site/bitsandbytes ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, peft, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', bitsandbytes.__version__)"
SHAPE=${SHAPE:-llama2-13b}
python3 -m komt_bot bench --model "dummy:$SHAPE" --quantization nf4 --concurrency "${CONCURRENCY:-1,8,32}" \
    --max-new-tokens "${MAX_NEW_TOKENS:-128}" --sequential-requests "${SEQUENTIAL_REQUESTS:-2}" \
    --paths "${PATHS:-sequential,engine}" ${KV_CACHE_BLOCKS:+--kv-cache-blocks "$KV_CACHE_BLOCKS"} --json > "$OUT/gpu_bench.json"
python3 - "$OUT/gpu_bench.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(report["machine"]["gpu"], report["model"])
for r in report["results"]:
    print(f"{r['path']:>10} conc={r['concurrency']:>3} tok/s={r['tokens_per_second']:>8} ttft_p50={r['ttft_p50']} "
          f"e2e_p50={r['e2e_p50']} peak_gpu_mb={r['peak_gpu_mb']} batch_max={r['batch_size_max']}")
print(report["ratios"])
PY
