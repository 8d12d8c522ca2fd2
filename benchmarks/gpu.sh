#!/usr/bin/env bash
# The GPU checks, as one script for one GPU node (a few minutes): the SD1.5-size UNet's bf16 training step at
# 256 px (time, images/s, peak memory; with and without gradient checkpointing), its dual-guidance sampler step,
# and the embedded default pipeline end to end on trainer=gpu (bf16-mixed) with test-sized settings.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results/gpu
#
# The tiny run reuses $BJEXP_CACHE when set (e.g. a cache prepared on a CPU machine with the same overrides).
set -euo pipefail
out=${1:-benchmarks/results/gpu}
py=${PYTHON:-python}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

$py benchmarks/unet_memory.py --device cuda --precision bf16 --batches 8 16 32 64 --steps 10 --tokens 256 \
  --out "$out/train"
$py benchmarks/unet_memory.py --device cuda --precision bf16 --checkpointing --batches 32 64 --steps 10 --tokens 256 \
  --out "$out/train_ckpt"
$py benchmarks/unet_memory.py --device cuda --precision bf16 --mode sample --batches 8 32 --steps 10 --tokens 256 \
  --out "$out/sample"

tiny=(data.n_patients=24 data.classifier_images=240 model.vae.train_steps=30 model.optim.batch_size=8
      encoder.tiny.pretrain_steps=5 eval.classifier.steps=20 trainer.max_steps=6 trainer.val_check_interval=3
      trainer.checkpoint_every_n_steps=3 trainer.enable_progress_bar=false sampler.steps=2 eval.n_bootstrap=20
      logger=csv)
run_dir=$(mktemp -d)
start=$SECONDS
$py -m bjexp.train trainer=gpu "${tiny[@]}" paths.run_dir="$run_dir" 2>&1 | tail -n 25 | tee "$out/tiny_gpu.log"
echo "tiny default on trainer=gpu: $((SECONDS - start)) s wall" | tee -a "$out/tiny_gpu.log"
cp "$run_dir/results.json" "$out/tiny_gpu_results.json"
