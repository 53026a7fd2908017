#!/usr/bin/env bash
# The retrain step at MmNas's published VQA shape on a CUDA device, in each variant issue 7 asks
# for: fp32 and bf16 autocast; fused attention (scaled_dot_product_attention, what the ops use)
# against written-out attention; and train.compile (default, reduce-overhead). Then one short
# retrain through the CLI with train.compile on, whose last batch is shorter (a recompile).
# Each figure lands in $OUT as JSON; the log in $OUT/variants.log.
# Usage: OUT=/tmp/gpu bash benchmarks/gpu_step_variants.sh [STEPS]
set -u
OUT=${OUT:-gpu-out}
STEPS=${1:-30}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 VLNAS_CACHE=/tmp/vlnas-cache
step() {  # name, then retrain_step.py options
  local name=$1; shift
  echo "== $name: $*"
  timeout 240 python3 benchmarks/retrain_step.py --device cuda --steps "$STEPS" --json "$OUT/$name.json" "$@" \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ('step_seconds', 'achieved_gflops', 'fraction_of_matmul', 'peak_memory_mib', 'first_step_seconds')})"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  step fp32_fused --precision fp32
  step fp32_written --precision fp32 --attention written
  step bf16_fused --precision bf16
  step bf16_written --precision bf16 --attention written
  step fp32_compiled --precision fp32 --compile default
  step bf16_compiled --precision bf16 --compile default
  step bf16_compiled_graphs --precision bf16 --compile reduce-overhead
  echo "== nas retrain with train.compile=default on CUDA (smoke config)"
  timeout 300 python3 -m nas retrain --genotype genotypes/mcan.json --config smoke --quiet --out /tmp/rc \
    train.device=cuda train.compile=default \
    && python3 -c "import json; s=json.load(open('/tmp/rc/summary.json')); print('val', s['final']['accuracy'], 'test', s['test'])"
} 2>&1 | tee "$OUT/variants.log"
