#!/usr/bin/env bash
# The GPU benchmark, one prepared run: 13B-shape dummy weights (random, real-shaped) with a random rank-8 LoRA, the
# batching engine at 1, 32 and 64 concurrent requests, 128 new tokens each, in three ways of loading komt:
#   nf4-lora     NF4 base + the LoRA unmerged (the model card's way)
#   nf4-merged   NF4 with the LoRA merged before quantizing. komt-bot's loader refuses merge + NF4 (plan_load:
#                merging into NF4 weights would re-quantize them), so this runs the NF4 base with no LoRA at
#                runtime: a merged model has exactly the base's shape and cost, and dummy weights carry no quality.
#   bf16-merged  unquantized bf16 with the LoRA merged (KOMT_MODEL__MERGE_ADAPTER=true)
# Needs only the repo and pip wheels (no network): wheels in .whl/ are installed into /tmp/site first when present.
# Writes $OUT/gpu_bench-<config>.json per config and $OUT/gpu_bench.json (all of them); at most ~7.5 min.
#
#   scripts/gpu_bench.sh              # on the GPU machine
#   scripts/gpu_bench.sh --dry-run    # or DRY_RUN=1: the same run on CPU with the tiny dummy shape, < 2 min
#
# Overrides: CONFIGS="nf4-lora bf16-merged", CONCURRENCY=1,32,64, MAX_NEW_TOKENS=128, SHAPE=llama2-13b,
# KV_CACHE_BLOCKS=160 (pages of 256 tokens on CUDA), PATHS=engine (add sequential for the model card's generate),
# SEQUENTIAL_REQUESTS=1, CONFIG_TIMEOUT=200 (seconds per config) and BUDGET=450 (seconds for all of them: a config
# that hangs cannot take the whole run, and the run ends within the budget plus a few seconds of summary).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; fi
DRY_RUN=${DRY_RUN:-0}
OUT=${OUT:-.bench}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    [ -d /tmp/site/bitsandbytes ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ "$DRY_RUN" = 1 ]; then
    # The same configs and concurrency levels on CPU with the tiny shape: checks the script, not the speed.
    SHAPE=${SHAPE:-tiny} MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-16} KV_CACHE_BLOCKS=${KV_CACHE_BLOCKS:-}
    CONFIG_TIMEOUT=${CONFIG_TIMEOUT:-90} BUDGET=${BUDGET:-110}
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
SHAPE=${SHAPE:-llama2-13b}
CONFIGS=${CONFIGS:-nf4-lora nf4-merged bf16-merged}
CONCURRENCY=${CONCURRENCY:-1,32,64}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-128}
# 64 requests x (a Korean question of <= 128 tokens + 128 new) fit in 64-128 pages of 256 tokens: 160 leaves room.
KV_CACHE_BLOCKS=${KV_CACHE_BLOCKS-160}
PATHS=${PATHS:-engine}
CONFIG_TIMEOUT=${CONFIG_TIMEOUT:-200}
BUDGET=${BUDGET:-450}
python3 -c "import torch, transformers, peft, bitsandbytes; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', bitsandbytes.__version__)"

run_config() {  # NAME: one `komt-bot bench` of that way of loading, its report in $OUT/gpu_bench-NAME.json
    local name=$1 quantization adapter=() env=()
    case "$name" in
        nf4-lora) quantization=nf4 ;;
        nf4-merged) quantization=nf4 adapter=(--adapter "") ;;
        bf16-merged) quantization=none env=(KOMT_MODEL__DTYPE=bfloat16 KOMT_MODEL__MERGE_ADAPTER=true) ;;
        *) echo "unknown config $name" >&2; return 2 ;;
    esac
    local left=$((BUDGET - (SECONDS - started)))
    if [ "$left" -lt 20 ]; then echo "!! no time left for $name (BUDGET=$BUDGET s)" >&2; return 1; fi
    [ "$left" -lt "$CONFIG_TIMEOUT" ] || left=$CONFIG_TIMEOUT
    echo "== $name: dummy:$SHAPE, $quantization, concurrency $CONCURRENCY, $MAX_NEW_TOKENS tokens (<= $left s)" >&2
    env "${env[@]}" timeout "$left" python3 -m komt_bot bench --model "dummy:$SHAPE" "${adapter[@]}" \
        --quantization "$quantization" --concurrency "$CONCURRENCY" --max-new-tokens "$MAX_NEW_TOKENS" \
        --paths "$PATHS" --sequential-requests "${SEQUENTIAL_REQUESTS:-1}" \
        ${KV_CACHE_BLOCKS:+--kv-cache-blocks "$KV_CACHE_BLOCKS"} --json > "$OUT/gpu_bench-$name.json"
}

started=$SECONDS
for name in $CONFIGS; do
    if ! run_config "$name"; then
        echo "!! $name failed or ran out of time; going on with the next" >&2
        rm -f "$OUT/gpu_bench-$name.json"
    fi
done
python3 - "$OUT" "$DRY_RUN" $CONFIGS <<'PY'
import json, pathlib, sys
out, dry_run, names = pathlib.Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
reports = {n: json.loads((out / f"gpu_bench-{n}.json").read_text()) for n in names if (out / f"gpu_bench-{n}.json").exists()}
(out / "gpu_bench.json").write_text(json.dumps({"dry_run": dry_run, "configs": reports}, indent=2, ensure_ascii=False))
first = next(iter(reports.values()), None)
if first:
    m = first["machine"]
    print(f"{m['gpu'] or m['cpu']} · torch {m['torch']} · transformers {m['transformers']}")
print(f"{'config':<12} {'path':>10} {'conc':>4} {'tok/s':>8} {'TTFT p50':>9} {'E2E p50':>8} {'peak GPU MB':>11} {'batch max':>9}")
for name, report in reports.items():
    for r in report["results"]:
        print(f"{name:<12} {r['path']:>10} {r['concurrency']:>4} {r['tokens_per_second']:>8} {r['ttft_p50']!s:>9} "
              f"{r['e2e_p50']:>8} {r['peak_gpu_mb']!s:>11} {r['batch_size_max']!s:>9}")
missing = [n for n in names if n not in reports]
if missing:
    print("no result for:", ", ".join(missing))
PY
echo "took $((SECONDS - started)) s; reports in $OUT/gpu_bench*.json" >&2
