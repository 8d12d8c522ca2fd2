#!/usr/bin/env bash
# Every GPU measurement of issue 17, as one script for one GPU node (about 5 minutes): benchmarks/gpu_perf.py (the
# SD1.5-size training step at 256 px with 256 tokens: FLOPs, images/s, MFU, peak memory per batch with and without
# checkpointing, each speed lever alone; the paper's test-set sampling estimate), then the embedded default pipeline
# end to end on trainer=gpu (bf16-mixed) with test-sized settings. Fails (exit 1) when no CUDA GPU is visible.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results/gpu
#
# The tiny run reuses $BJEXP_CACHE when set (e.g. a cache prepared on a CPU machine with the same overrides).
set -euo pipefail
out=${1:-benchmarks/results/gpu}
py=${PYTHON:-python}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

$py benchmarks/gpu_perf.py --out "$out" --budget-s 240

tiny=(data.n_patients=24 data.classifier_images=240 model.vae.train_steps=30 model.optim.batch_size=8
      encoder.tiny.pretrain_steps=5 eval.classifier.steps=20 trainer.max_steps=6 trainer.val_check_interval=3
      trainer.checkpoint_every_n_steps=3 trainer.enable_progress_bar=false sampler.steps=2 eval.n_bootstrap=20
      logger=csv)
run_dir=$(mktemp -d)
start=$SECONDS
$py -m bjexp.train trainer=gpu "${tiny[@]}" paths.run_dir="$run_dir" 2>&1 | tail -n 25 | tee "$out/tiny_gpu.log"
echo "tiny default on trainer=gpu: $((SECONDS - start)) s wall" | tee -a "$out/tiny_gpu.log"
cp "$run_dir/results.json" "$out/tiny_gpu_results.json"
