#!/bin/bash
# Every GPU figure docs/speed.md still owes, in one device call of under 10 minutes (H100 or H200):
#   bash benchmarks/gpu_session.sh        (device call: carry=[".whl"], timeout_s=600)
# 1. gpu_bench.sh: the ViT's bare step and its loop plain, with data.prefetch=true, with
#    data.augment_output=float32 and with both (bench.md, profiles)
# 2. augment_output.py --device cuda: BatchAugment + Normalize alone, uint8 against float32 output
# 3. predict.py --device cuda over 20,000 photos written once, the ViT then DenseNet121, .ckpt and fp32
#    ONNX (int8 ONNX is a CPU format: its figures are docs/speed.md's CPU table)
# Each step has its own time limit, so a slow one cannot take the others' figures with it. Everything
# goes to $OUT (the device call's result folder): gpu_bench's files, and one .txt per step.
set -u
cd "$(dirname "$0")/.."
source benchmarks/device_env.sh
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-230} bash benchmarks/gpu_bench.sh > "$OUT/gpu_bench.txt" 2>&1
echo "gpu_bench.sh exit code $?"
timeout 45 python3 benchmarks/augment_output.py --device cuda 2>&1 | tee "$OUT/augment_output.txt"
python3 -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())" |
  tee "$OUT/onnxruntime.txt"
for model in vit densenet; do
  timeout 130 python3 benchmarks/predict.py --device cuda --model "$model" --images 20000 \
    --photos "$FFD_ROOT/photos" --runtimes ckpt,fp32 2>&1 | tee "$OUT/predict_$model.txt"
done
tail -30 "$OUT/gpu_bench.txt"
