#!/usr/bin/env bash
# The CUDA paths, run on a GPU machine from the repository root: autocast (bf16, fp16 with loss
# scaling), EMA, mid-epoch resume after SIGKILL, nas submit, a search, and the retrain-step
# benchmark at MmNas's published shape. Each result lands in $OUT (default ./gpu-out).
# Usage: OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 VLNAS_CACHE=/tmp/vlnas-cache
nas() { python3 -m nas "$@"; }
SMOKE="--config smoke --quiet train.device=cuda"
GENO=genotypes/mcan.json
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  for precision in auto fp32 fp16; do
    echo "== retrain precision=$precision (ema 0.9)"
    nas retrain --genotype $GENO $SMOKE --out /tmp/r-$precision train.precision=$precision train.ema_decay=0.9 \
      && python3 -c "import json,sys; s=json.load(open('/tmp/r-$precision/summary.json')); print('val', s['final']['accuracy'], 'test', s['test'])"
  done
  echo "== submit on CUDA"
  nas submit --checkpoint /tmp/r-auto/checkpoints/last.pt --quiet --out /tmp/sub.json && python3 -c "import json; r=json.load(open('/tmp/sub.json')); print(len(r), 'answers, all strings:', all(isinstance(x['answer'], str) for x in r))"
  echo "== search on CUDA (bf16 autocast)"
  nas search --task vqa $SMOKE --out /tmp/s1
  echo "== SIGKILL mid-epoch, rerun, compare with an uninterrupted run"
  KR="--genotype $GENO $SMOKE train.batch_size=4 train.checkpoint_every=1 train.precision=fp32"
  nas retrain $KR --out /tmp/whole
  (nas retrain $KR --out /tmp/killed) & pid=$!
  python3 - <<'PY'
import time, torch, os, signal, subprocess
from nas.checkpoint import load_checkpoint
path = "/tmp/killed/checkpoints/last.pt"
for _ in range(2000):
    try:
        s = load_checkpoint(path)
        if s["epoch"] == 1 and s["progress"] and s["progress"]["steps"] >= 8:
            break
    except Exception:
        pass
    time.sleep(0.05)
subprocess.run(["pkill", "-9", "-f", "out /tmp/killed"])
print("killed at epoch", s["epoch"], "step", s["progress"]["steps"])
PY
  wait $pid 2>/dev/null
  nas retrain $KR --out /tmp/killed
  python3 - <<'PY'
from nas.checkpoint import load_checkpoint
a = load_checkpoint("/tmp/whole/checkpoints/last.pt"); b = load_checkpoint("/tmp/killed/checkpoints/last.pt")
gap = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
print("max weight gap after resume on CUDA:", gap, "| losses", [h["loss"] for h in a["history"]], [h["loss"] for h in b["history"]])
PY
} 2>&1 | tee "$OUT/checks.log"
echo "== the test suite with CUDA as the default device (distributed tests need 2 GPUs: left out)" | tee -a "$OUT/checks.log"
timeout 300 python3 -m pytest -q -x -p no:cacheprovider -k "not distributed" 2>&1 | tail -15 | tee -a "$OUT/checks.log"
for precision in fp32 bf16; do
  python3 benchmarks/retrain_step.py --device cuda --precision $precision --steps 30 --json "$OUT/step_cuda_$precision.json" \
    2>&1 | tee -a "$OUT/checks.log"
done
