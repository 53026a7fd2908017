#!/usr/bin/env bash
# The retrain step at MmNas's published VQA shape on a CUDA device, in each variant issue 7 asks
# for: fp32 and bf16 autocast; fused attention (scaled_dot_product_attention, what the ops use)
# against written-out attention; and train.compile (default, reduce-overhead). Then one short
# inductor check (benchmarks/compile_check.py): compiled outputs and gradients against the plain model.
# Each figure lands in $OUT as JSON; the log in $OUT/variants.log.
# Usage: OUT=/tmp/gpu [VARIANTS='bf16_fused bf16_compiled'] bash benchmarks/gpu_step_variants.sh [STEPS]
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
  for name in ${VARIANTS:-fp32_fused fp32_written bf16_fused bf16_written fp32_compiled bf16_compiled fp32_compiled_graphs bf16_compiled_graphs}; do
    case $name in
      fp32_fused) step $name --precision fp32 ;;
      fp32_written) step $name --precision fp32 --attention written ;;
      bf16_fused) step $name --precision bf16 ;;
      bf16_written) step $name --precision bf16 --attention written ;;
      fp32_compiled) step $name --precision fp32 --compile default ;;
      bf16_compiled) step $name --precision bf16 --compile default ;;
      fp32_compiled_graphs) step $name --precision fp32 --compile reduce-overhead ;;
      bf16_compiled_graphs) step $name --precision bf16 --compile reduce-overhead ;;
    esac
  done
  for mode in default reduce-overhead; do
    echo "== inductor against the plain model, $mode"
    timeout 240 python3 benchmarks/compile_check.py --device cuda --mode $mode
  done
} 2>&1 | tee "$OUT/variants.log"
