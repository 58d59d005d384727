#!/usr/bin/env bash
# The GPU benchmark (issue 7), one stage per device call; every output goes under $OUT.
#
#   bash benchmarks/run_gpu_benchmark.sh throughput   # models, augmentations, 9 configs' samples/s, profiles
#   bash benchmarks/run_gpu_benchmark.sh quality      # 9 configs x (EPOCHS pretraining epochs + probe) on fold 1,
#                                                     # baselines, latent evaluation, summary tables
#
# Data: the surrogate of all 153 Sleep-EDF nights (real hypnograms and band powers, synthetic signals), made
# on the machine from .carry/sleep-edf (make_surrogate.py + bandpower/, copied from ../shared, never committed).
# Results on it measure speed and prove the pipeline; they say nothing about real-EEG accuracy.
set -uo pipefail
stage=${1:?usage: run_gpu_benchmark.sh throughput|quality}
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
EPOCHS=${EPOCHS:-3}
DATA=/tmp/sedf/npz
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/device.txt"
if [ ! -f "$DATA/SHA256SUMS.txt" ]; then
  /usr/bin/time -f "surrogate: %e s" python3 .carry/sleep-edf/make_surrogate.py --out "$DATA" --subjects all --format npz \
    --workers 16 --src .carry/sleep-edf/bandpower 2>&1 | tail -2
fi
CONFIGS=$(ls configs/DLPROJ_pretrain_*.json)
case "$stage" in
throughput)
  python3 benchmarks/bench_models.py --device cuda --batch-sizes 128 512 --dtype float32 bf16 --steps 30 2>&1 | tee "$OUT/bench_models.txt" | tail -30
  python3 benchmarks/bench_augment.py --device cuda 2>&1 | tee "$OUT/bench_augment.txt" | tail -15
  python3 benchmarks/bench_train.py --data-root "$DATA" --steps 300 --gpu 0 --json "$OUT/bench_train.json" 2>&1 \
    | grep -v "it/s" | tee "$OUT/bench_train.txt" | tail -14
  for cfg in configs/DLPROJ_pretrain_Hybrid_*.json configs/DLPROJ_pretrain_CRL_Transformer_Sleep-EDF-2018.json; do
    python3 benchmarks/profile_train.py --config "$cfg" --gpu 0 --steps 40 --rows 15 2>&1 | tail -22
  done | tee "$OUT/profile.txt" | grep -E "ms/step|GPU kernel"
  ;;
quality)
  mkdir -p /tmp/q && cd /tmp/q && ln -sfn "$OLDPWD" repo
  R=repo; SET="--set data.root_dir=$DATA --set trainer.max_epochs=$EPOCHS --set trainer.early_stopping_patience=100 --set trainer.val_period=0"
  for cfg in $CONFIGS; do
    name=$(basename "$cfg" .json); script=train_$(echo "$name" | cut -d_ -f3 | tr A-Z a-z).py
    /usr/bin/time -f "$name wall %e s" python3 $R/$script --config $R/$cfg --gpu 0 --fold 1 $SET 2>&1 | grep -E "val loss|wall|Error|error" | tail -3
  done
  python3 $R/classifier_training.py --config $R/configs/DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json --baseline bandpower --fold 1 $SET 2>&1 | tail -3
  python3 $R/classifier_training.py --config $R/configs/DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json --baseline random --fold 1 --gpu 0 $SET 2>&1 | tail -3
  python3 $R/classifier_training.py --config $R/configs/DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json --baseline supervised --fold 1 --gpu 0 $SET 2>&1 | tail -3
  for cfg in $CONFIGS; do python3 $R/latent_space_evaluator.py --config $R/$cfg --fold 1 2>&1 | tail -1 & done; wait
  python3 $R/latent_space_evaluator.py --summarize 2>&1 | tail -15
  python3 $R/classifier_training.py --summarize 2>&1 | tail -20
  cp results/summary.md results/summary.csv "$OUT/" 2>/dev/null; cp results/latent_summary.* "$OUT/" 2>/dev/null
  cat checkpoints/*/train_fold-01.json > "$OUT/train_summaries.json"
  tar czf "$OUT/results.tgz" --exclude='*.npz' results logs
  ;;
esac
