#!/bin/bash
# One GPU session of `python -m ffd.bench`, for a machine whose Python has torch, lightning, timm and
# torchmetrics but not hydra-core / omegaconf / antlr4 (bring them as wheels in .whl/, e.g. with
# ../shared/tools/device-wheels.sh). Writes bench.json, bench.md and the log to $OUT (default /tmp/ffd/out).
#   bash benchmarks/gpu_bench.sh [more ffd.bench overrides; a key given again replaces the one below]
# By default: the ViT with torch.compile in CUDA-graph mode (compile mode reduce-overhead), the
# augmentation on the GPU; the bare step (a) and the full loop (c), host syncs per step, torch.profiler
# tables of (a) and (c), and three more (c) rows: data.prefetch=true (the next batch copied and augmented
# on a second CUDA stream, ffd.data.prefetch), data.augment_output=float32 (BatchAugment hands the model
# floats, no uint8 round trip) and both. Their ratios to the first (c) row decide what trainer=gpu turns
# on. About 3 minutes on an H200, mostly compilation. models=[vit,densenet] adds DenseNet121, about
# 2 more minutes per row (the figures of 2026-11-27 in docs/speed.md: add loop_variants=[] to keep its
# rows to two). For torch.compile without CUDA graphs, add
#   "train_overrides=['callbacks.speed.compile=true']"
# The data pipeline alone (b) and the CPU-augmentation loop were measured before (docs/speed.md) and are
# left out: add parts=[step,data,loop] augment_on=[cpu,gpu] for them.
set -u
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
# A warm machine keeps the last call's files: only this call's results go to $OUT.
rm -f "$FFD_ROOT"/bench/bench.json "$FFD_ROOT"/bench/bench.md "$FFD_ROOT"/bench/profile_*.txt
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning, timm; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__, 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/gpu.txt"
timeout "${BENCH_TIMEOUT_S:-540}" python3 -m ffd.bench models=[vit] steps=100 warmup_steps=30 \
  parts=[step,loop] augment_on=[gpu] \
  "train_overrides=['callbacks.speed.compile={mode:reduce-overhead}']" \
  "loop_variants=[['data.prefetch=true'],['data.augment_output=float32'],['data.prefetch=true','data.augment_output=float32']]" \
  profile_steps=5 \
  hydra.run.dir="$FFD_ROOT/bench" "$@" > "$OUT/bench.log" 2>&1
status=$?
echo "ffd.bench exit code $status"
cp "$FFD_ROOT"/bench/bench.json "$FFD_ROOT"/bench/bench.md "$FFD_ROOT"/bench/profile_*.txt "$OUT"/ 2>/dev/null
grep -v "^\[20\|it/s\|Epoch" "$OUT/bench.log" | tail -40
cat "$OUT/bench.md" 2>/dev/null || tail -60 "$OUT/bench.log"
exit $status
