#!/usr/bin/env bash
# The GPU benchmark (issue 7), one stage per device call; every output goes under $OUT.
#
#   bash benchmarks/run_gpu_benchmark.sh models       # bench_models.py and bench_augment.py on the GPU
#   bash benchmarks/run_gpu_benchmark.sh throughput   # the configs' samples/s (PATTERN, MODES), CUDA tests, PROFILE
#   bash benchmarks/run_gpu_benchmark.sh layouts      # bench_cnn_layouts.py: the step's layout and inductor-tuning
#                                                     # variants (RUNS; TESTS=1 adds the CUDA tests)
#   bash benchmarks/run_gpu_benchmark.sh quality      # 9 configs x (EPOCHS x STEPS mini-batches + probe) on fold 1,
#                                                     # baselines, latent evaluation, summary tables
#   ONLY="CRL MP" BASELINES=0 bash benchmarks/run_gpu_benchmark.sh quality   # a subset, to fit a 10-minute call
#   bash benchmarks/run_gpu_benchmark.sh validation   # bench_validation.py: a validation pass against val_chunk_size (PATTERN)
#   bash benchmarks/run_gpu_benchmark.sh probe        # bench_probe.py: probe time before/after on 164k x 128 latents
#                                                     # (SEEDS probe seeds; the MLP after at each of MLP_BATCHES)
#   CONFIG=Hybrid_Transformer bash benchmarks/run_gpu_benchmark.sh pipeline   # bench_pipeline.py: one config,
#                                                     # fold 1, to early stopping, every stage timed (issue 15);
#                                                     # pauses after STOP_AFTER s and resumes in the next call
#   CONFIGS="MP_CNN Hybrid_CNN" bash benchmarks/run_gpu_benchmark.sh pipelines  # bench_pipeline.py for CONFIGS at
#                                                     # once on GPU 0 under MPS, detached: they outlive the call
#   bash benchmarks/run_gpu_benchmark.sh poll         # the next call on the same warm machine: waits WAIT_S s more
#   bash benchmarks/run_gpu_benchmark.sh concurrency  # bench_concurrency.py: K replicas of a step on K streams of one
#                                                     # GPU, larger batches, two processes sharing it (PATTERN)
#   bash benchmarks/run_gpu_benchmark.sh mps          # two and four processes on one GPU, without and with NVIDIA
#                                                     # MPS (PATTERN, PROCESSES_LIST)
#   bash benchmarks/run_gpu_benchmark.sh table        # benchmark.py end to end: CONFIG's folds one at a time, then four
#                                                     # at once on GPU 0 under MPS (MAX_EPOCHS, ALONE, TOGETHER)
#   bash benchmarks/run_gpu_benchmark.sh ddp          # (2 GPUs) DDP scaling and loss match, CRL CNN_Attention + Hybrid CNN
#   bash benchmarks/run_gpu_benchmark.sh probes       # (issue 16) linear, MLP and context probes on the same latents
#                                                     # of CRL CNN_Attention and MP CNN (quality budget), fit times
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
if [ ! -f "$DATA/SHA256SUMS.txt" ] && [[ ! $stage =~ ^(concurrency|mps|layouts|poll)$ ]]; then  # these use random data, or none
  /usr/bin/time -f "surrogate: %e s" python3 .carry/sleep-edf/make_surrogate.py --out "$DATA" --subjects all --format npz \
    --workers 16 --src .carry/sleep-edf/bandpower 2>&1 | tail -2
fi
# the shipped configs named by space-separated globs: "CRL_* MP_CNN" -> configs/DLPROJ_pretrain_<glob>_Sleep-EDF-2018.json
configs_matching() {
  local patterns p; read -ra patterns <<< "$1"
  for p in "${patterns[@]}"; do ls configs/DLPROJ_pretrain_${p}_Sleep-EDF-2018.json; done
}
# `together K CONFIG JSONL`: K processes of bench_concurrency.py on one GPU, each one replica of CONFIG, timing the
# same SECONDS_EACH window after SETUP_S seconds of setup; their rows go to JSONL.
together() {
  local start=$(( $(date +%s) + ${SETUP_S:-45} )) i
  for i in $(seq $1); do
    timeout 120 python3 benchmarks/bench_concurrency.py --config $2 --replicas 1 --start-at $start \
      --seconds $SECONDS_EACH --json "$3" 2>&1 | grep -v Warning &
  done
  wait
}
# NVIDIA MPS, a user-space daemon: `mps_start` (exits the stage when the machine has none), `mps_stop`. The card's
# compute mode is left as found.
# mps_stop also finds a daemon that an earlier call on the same machine started (the `poll` stage).
MPS_PIPE=/tmp/mps_pipe
mps_start() {
  if ! command -v nvidia-cuda-mps-control > /dev/null; then echo "no nvidia-cuda-mps-control on this machine"; exit 0; fi
  export CUDA_MPS_PIPE_DIRECTORY=$MPS_PIPE CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  nvidia-cuda-mps-control -d && echo "MPS daemon started"
}
mps_stop() { echo quit | CUDA_MPS_PIPE_DIRECTORY=$MPS_PIPE nvidia-cuda-mps-control; }
# detach NAME CMD... / detached_wait: runs that outlive the device call (benchmarks/detached.sh)
source benchmarks/detached.sh
case "$stage" in
models)
  python3 benchmarks/bench_models.py --device cuda --batch-sizes 128 512 --dtype float32 bf16 --steps 30 2>&1 | tee "$OUT/bench_models.txt" | tail -30
  python3 benchmarks/bench_augment.py --device cuda 2>&1 | tee "$OUT/bench_augment.txt" | tail -15
  ;;
throughput)
  # PATTERN selects configs (space-separated globs: configs/DLPROJ_pretrain_${glob}_Sleep-EDF-2018.json), MODES the variants:
  # default (the configs as shipped: torch.compile + CUDA graph), nocompile (CUDA graph only), eager (neither).
  if [ "${TESTS:-1}" = 1 ]; then
    python3 -m pytest -q -k cuda tests/test_engine.py tests/test_augmentations.py > "$OUT/pytest_cuda.txt" 2>&1
    tail -1 "$OUT/pytest_cuda.txt"
  fi
  selected=$(configs_matching "${PATTERN:-*}")
  for mode in ${MODES:-default}; do
    extra=""
    [ $mode = nocompile ] && extra="--set trainer.compile=false"
    [ $mode = eager ] && extra="--set trainer.compile=false --set trainer.cuda_graphs=false"
    timeout ${LIMIT:-540} python3 benchmarks/bench_train.py --data-root "$DATA" --steps ${STEPS:-200} --gpu 0 $extra \
      --configs $selected --json "$OUT/bench_train_$mode.json" 2>&1 | grep -v "it/s" | tee "$OUT/bench_train_$mode.txt" | tail -12
  done
  if [ -n "${PROFILE:-}" ]; then
    timeout 150 python3 benchmarks/profile_train.py --config configs/DLPROJ_pretrain_${PROFILE}_Sleep-EDF-2018.json \
      --gpu 0 --steps 40 --rows 25 2>&1 | tail -32 | tee "$OUT/profile_$PROFILE.txt" | grep -E "ms/step|GPU kernel"
  fi
  ;;
layouts)
  # bench_cnn_layouts.py: the CNN step under layout variants (RUNS="config:variant ..."). One process per run
  # fills the inductor cache in parallel, then the timed runs go one after another, alone on the GPU.
  # TESTS=1 runs the CUDA tests beside the warm-ups (their times are not measured).
  RUNS=${RUNS:-"MP_CNN:ncl MP_CNN:cl+prelu_shared MP_CNN:cl MP_CNN_Attention:cl+prelu_shared MP_CNN_Attention:cl"}
  if [ "${TESTS:-0}" = 1 ]; then
    python3 -m pytest -q -k cuda tests/test_engine.py tests/test_probe.py tests/test_augmentations.py \
      > "$OUT/pytest_cuda.txt" 2>&1 &
  fi
  # every run's exit status (124: cut off by its timeout) and last lines of stderr go to $OUT/layouts_log.txt
  layout_run() {  # layout_run TIMEOUT RUN ARGS...: one bench_cnn_layouts.py process
    local limit=$1 r=$2 err rc; shift 2; err=$(mktemp)
    timeout $limit python3 benchmarks/bench_cnn_layouts.py --config configs/DLPROJ_pretrain_${r%%:*}_Sleep-EDF-2018.json \
      --variant ${r#*:} "$@" 2> "$err"; rc=$?
    echo "$r $* rc=$rc (limit $limit s): $(grep -v Warning "$err" | tail -3 | tr '\n' ' ')" >> "$OUT/layouts_log.txt"
    rm -f "$err"
  }
  for r in $RUNS; do layout_run ${WARMUP_TIMEOUT:-300} $r --steps 3 --warmup 3 --rows 0 > /dev/null & done
  wait
  [ -f "$OUT/pytest_cuda.txt" ] && tail -1 "$OUT/pytest_cuda.txt"
  for r in $RUNS; do layout_run ${TIMED_TIMEOUT:-90} $r | tee -a "$OUT/layouts.jsonl"; done
  ;;
quality)
  # Equal budget for every config: EPOCHS x STEPS mini-batches of 128 on fold 1, then the probe (linear);
  # latent evaluation of each run on the CPUs while the GPU trains the next. ONLY="CRL MP" runs a subset,
  # BASELINES=0 skips the baselines, EXTRA_SET adds overrides ("--set trainer.compile=false" saves the
  # compilation time, 30-130 s per config, where calls are short). Results are packed after every run, so a
  # cut-off call still returns them.
  STEPS=${STEPS:-250}; work=/tmp/q; mkdir -p $work/logs; repo=$(pwd); cd $work
  SET="--set data.root_dir=$DATA --set trainer.max_epochs=$EPOCHS --set trainer.max_steps_per_epoch=$STEPS
       --set trainer.early_stopping_patience=100 --set trainer.val_period=0 ${EXTRA_SET:-}"
  pack() { tar czf "$OUT/results.tgz" results logs checkpoints/*/train_fold-01.json 2>/dev/null; }
  for paradigm in ${ONLY:-CRL MP Hybrid}; do
    for cfg in $repo/configs/DLPROJ_pretrain_${paradigm}_*.json; do
      name=$(basename "$cfg" .json); script=$repo/train_$(echo $paradigm | tr A-Z a-z).py
      [ -f "results/$name/metrics.json" ] && continue
      start=$(date +%s)
      python3 $script --config $cfg --gpu 0 --fold 1 $SET > "logs/$name.txt" 2>&1 || echo "FAILED $name"
      echo "$name: pretrain + probe $(( $(date +%s) - start )) s" | tee -a "$OUT/quality.txt"
      (python3 $repo/latent_space_evaluator.py --config $cfg --fold 1 > "logs/latent_$name.txt" 2>&1 &)
      pack
    done
  done
  if [ "${BASELINES:-1}" = 1 ]; then
    base=$repo/configs/DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json
    for b in bandpower random supervised; do
      start=$(date +%s)
      python3 $repo/classifier_training.py --config $base --baseline $b --fold 1 --gpu 0 $SET > "logs/baseline_$b.txt" 2>&1 \
        || echo "FAILED baseline $b"
      echo "baseline $b: $(( $(date +%s) - start )) s" | tee -a "$OUT/quality.txt"
      pack
    done
  fi
  while pgrep -f latent_space_evaluator.py > /dev/null; do sleep 2; done
  python3 $repo/latent_space_evaluator.py --summarize > /dev/null 2>&1
  python3 $repo/classifier_training.py --summarize > /dev/null 2>&1
  cat results/summary.md 2>/dev/null
  pack
  ;;
validation)
  selected=$(configs_matching "${PATTERN:-CRL_CNN_Attention MP_CNN_Attention Hybrid_CNN_Attention Hybrid_Transformer}")
  timeout ${LIMIT:-300} python3 benchmarks/bench_validation.py --data-root "$DATA" --gpu 0 --chunks ${CHUNKS:-128 512 1024 2048} \
    --configs $selected --json "$OUT/bench_validation.json" 2>&1 | tee "$OUT/bench_validation.txt" | tail -20
  ;;
probe)
  python3 benchmarks/bench_probe.py --gpu 0 --seeds ${SEEDS:-3} --mlp-batch-sizes ${MLP_BATCHES:-128 256 1024} \
    --json "$OUT/bench_probe.json" 2>/dev/null | tee "$OUT/bench_probe.txt"
  ;;
pipeline)
  # The shipped settings, trained to early stopping; the scratch run stays in $WORKDIR for inspection. A run
  # longer than one call pauses after STOP_AFTER seconds (exit 3) and leaves its workdir as 15-MB parts,
  # $OUT/pipeline_workdir_$cfg.tgz.part-*, since the device returns no file over 16 MiB: copy them into
  # .carry/pipeline/ and carry that folder into the next call, which joins and unpacks them and resumes.
  cfg=${CONFIG:-CRL_CNN_Attention}; work=${WORKDIR:-/tmp/pipeline}; resume=""
  if compgen -G ".carry/pipeline/pipeline_workdir_$cfg.tgz.part-*" > /dev/null && [ ! -d "$work" ]; then
    mkdir -p "$work" && cat .carry/pipeline/pipeline_workdir_$cfg.tgz.part-* | tar xz -C "$work"
  fi
  [ -f "$work/bench_segments.json" ] && resume="--resume"
  python3 benchmarks/bench_pipeline.py --config configs/DLPROJ_pretrain_${cfg}_Sleep-EDF-2018.json --fold 1 --gpu 0 \
    --set data.root_dir=$DATA --workdir "$work" --stop-after ${STOP_AFTER:-420} $resume --json "$OUT/pipeline_$cfg.json" 2>&1 \
    | grep -v "it/s" | tail -30 | tee "$OUT/pipeline_$cfg.txt"
  if [ "${PIPESTATUS[0]}" = 3 ]; then
    tar cz -C "$work" --exclude="embeddings_*" . | split -b 15m - "$OUT/pipeline_workdir_$cfg.tgz.part-" \
      && echo "paused: $OUT/pipeline_workdir_$cfg.tgz.part-* hold the run; copy them to .carry/pipeline/ for the next call"
  fi
  ;;
pipelines)
  # bench_pipeline.py (the `pipeline` stage's run: fold 1 to early stopping with the shipped settings, every stage
  # timed) for every config of CONFIGS at once on GPU 0, under MPS when there are several, each in its own
  # workdir. The runs are detached, so they outlive this call: `poll` in the next call (on the same warm machine,
  # within 30 s) waits for them again. Each run's stage times are those of a GPU shared with the others; its
  # epochs to early stopping are its own.
  read -ra cfgs <<< "${CONFIGS:-MP_CNN Hybrid_CNN}"
  mkdir -p $DETACHED/out && date +%s > $DETACHED/out/started_at
  if [ ${#cfgs[@]} -gt 1 ]; then mps_start; touch $DETACHED/mps; fi
  for cfg in "${cfgs[@]}"; do
    detach pipeline_$cfg python3 benchmarks/bench_pipeline.py --config configs/DLPROJ_pretrain_${cfg}_Sleep-EDF-2018.json \
      --fold 1 --gpu 0 --set data.root_dir=$DATA --workdir /tmp/pipelines/$cfg --json $DETACHED/out/pipeline_$cfg.json
  done
  detached_wait
  ;;
poll)
  detached_wait
  ;;
concurrency)
  # Does one run at batch 128 fill the GPU? First one process per (config, batch) fills the inductor cache in
  # parallel; then, alone on the GPU: K replicas on K streams in one process (interleaved and threaded), the
  # step at larger BATCHES, and two processes timing the same window (time-sliced sharing).
  SECONDS_EACH=${SECONDS_EACH:-8}
  for c in ${PATTERN:-Hybrid_CNN MP_CNN}; do
    for b in 128 ${BATCHES-256 512}; do
      timeout 300 python3 benchmarks/bench_concurrency.py --config configs/DLPROJ_pretrain_${c}_Sleep-EDF-2018.json \
        --batch $b --replicas 1 --warmup 2 --seconds 1 > /dev/null 2>&1 &
    done
  done
  wait
  for c in ${PATTERN:-Hybrid_CNN MP_CNN}; do
    config=configs/DLPROJ_pretrain_${c}_Sleep-EDF-2018.json
    timeout 200 python3 benchmarks/bench_concurrency.py --config $config --replicas ${REPLICAS:-1 2 4} \
      --modes interleaved threads --seconds $SECONDS_EACH ${EXTRA:-} --json "$OUT/concurrency.jsonl" 2>&1 | grep -v Warning
    for b in ${BATCHES-256 512}; do
      timeout 120 python3 benchmarks/bench_concurrency.py --config $config --batch $b --replicas 1 \
        --seconds $SECONDS_EACH --json "$OUT/concurrency.jsonl" 2>&1 | grep -v Warning
    done
    [ "${PROCESSES:-1}" = 1 ] || continue
    together 2 $config "$OUT/concurrency_processes.jsonl"
  done
  ;;
mps)
  # Two processes on one GPU, without and with NVIDIA's Multi-Process Service (mps_start, stopped at the end).
  # Without MPS the processes share the GPU by time slices; with it their kernels may run side by side, as streams
  # of one process would. PATTERN configs, one process alone first (it also fills the inductor cache), then
  # PROCESSES_LIST concurrent processes timing the same window.
  SECONDS_EACH=${SECONDS_EACH:-10}
  for c in ${PATTERN:-Hybrid_CNN MP_CNN}; do
    config=configs/DLPROJ_pretrain_${c}_Sleep-EDF-2018.json
    timeout 300 python3 benchmarks/bench_concurrency.py --config $config --replicas 1 --seconds $SECONDS_EACH \
      --json "$OUT/mps_alone.jsonl" 2>&1 | grep -v Warning
    together 2 $config "$OUT/mps_off_2.jsonl"
  done
  mps_start
  ls $CUDA_MPS_PIPE_DIRECTORY > "$OUT/mps_pipe_files.txt"
  for c in ${PATTERN:-Hybrid_CNN MP_CNN}; do
    config=configs/DLPROJ_pretrain_${c}_Sleep-EDF-2018.json
    for k in ${PROCESSES_LIST:-2 4}; do together $k $config "$OUT/mps_on_$k.jsonl"; done
  done
  mps_stop
  cp -r $CUDA_MPS_LOG_DIRECTORY "$OUT/mps_log" 2>/dev/null
  ;;
table)
  # Does `benchmark.py --gpus 0,0,0,0` under MPS shorten the table end to end (validation, probes and latent
  # evaluation included), as the mps stage's samples/s suggest? CONFIG (copied where it has no reference twin) at
  # trainer.max_epochs=MAX_EPOCHS: fold WARM first (one epoch: fills the inductor cache), then the ALONE folds one
  # at a time, then the TOGETHER folds all at once on GPU 0 under MPS. Wall times and each run's train_fold JSON.
  cfg=${CONFIG:-CRL_CNN_Attention}; mkdir -p /tmp/table_cfg && cp configs/DLPROJ_pretrain_${cfg}_Sleep-EDF-2018.json /tmp/table_cfg/
  table() {  # table NAME FOLDS GPUS EPOCHS
    local started=$(date +%s.%N)
    timeout ${TABLE_TIMEOUT:-400} python3 benchmark.py --configs /tmp/table_cfg/DLPROJ_pretrain_${cfg}_Sleep-EDF-2018.json \
      --folds $2 --gpus $3 --set data.root_dir=$DATA --set trainer.max_epochs=$4 > "$OUT/table_$1.txt" 2>&1
    local rc=$?
    python3 -c "import json,sys; print(json.dumps({'config': sys.argv[1], 'runs': sys.argv[2], 'folds': sys.argv[3], 'gpus': sys.argv[4],
      'max_epochs': int(sys.argv[5]), 'rc': int(sys.argv[6]), 'wall_s': round(float(sys.argv[8]) - float(sys.argv[7]), 1)}))" \
      $cfg $1 $2 $3 $4 $rc $started $(date +%s.%N) | tee -a "$OUT/table.jsonl"
  }
  table warm ${WARM:-10} 0 1
  table alone ${ALONE:-9} 0 ${MAX_EPOCHS:-3}
  mps_start
  table together ${TOGETHER:-1,2,3,4} 0,0,0,0 ${MAX_EPOCHS:-3}
  mps_stop
  for f in checkpoints/DLPROJ_pretrain_${cfg}_Sleep-EDF-2018/train_fold-*.json; do
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({'file': sys.argv[1].split('/')[-1], **{k: d.get(k)
      for k in ('steps', 'train_samples_per_s', 'best_val_loss', 'peak_gpu_memory_gb')}}))" $f | tee -a "$OUT/table_runs.jsonl"
  done
  ;;
ddp)
  # Issue 8, on 2 GPUs: samples/s on 1 GPU vs 2 GPUs at the same per-GPU batch (128; global 256), and the
  # validation loss after the same steps with the same global batch (128: 1 x 128 vs 2 x 64). Eager steps on
  # both sides (CUDA graphs are single-GPU only; no compilation, to fit the call). One JSON line per run.
  STEPS=${STEPS:-120}; work=/tmp/ddp; mkdir -p $work; repo=$(pwd); cd $work
  COMMON="--fold 1 --gpu 0 --set data.root_dir=$DATA --set trainer.max_epochs=1 --set trainer.max_steps_per_epoch=$STEPS
          --set trainer.val_period=0 --set trainer.compile=false --set trainer.cuda_graphs=false
          --set probe.run_after_pretraining=false"
  for cfg in CRL_CNN_Attention Hybrid_CNN; do
    script=$repo/train_$(echo ${cfg%%_*} | tr A-Z a-z).py; config=$repo/configs/DLPROJ_pretrain_${cfg}_Sleep-EDF-2018.json
    for run in "1 128" "2 256" "2 128"; do
      set -- $run; name="ddp_${cfg}_gpus$1_batch$2"
      launcher="python3"; [ $1 -gt 1 ] && launcher="torchrun --standalone --nproc_per_node $1"
      $launcher $script --config $config $COMMON --set trainer.batch_size=$2 --set exp_name=$name >> "$OUT/ddp_logs.txt" 2>&1 \
        || echo "FAILED $name" | tee -a "$OUT/ddp_logs.txt"
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({'run': sys.argv[2], **{k: d[k] for k in
        ('world_size', 'global_batch', 'steps', 'train_samples_per_s', 'best_val_loss', 'peak_gpu_memory_gb')}}))" \
        checkpoints/$name/train_fold-01.json $name | tee -a "$OUT/ddp.jsonl"
    done
  done
  ;;
probes)
  # Issue 16: CRL CNN_Attention and MP CNN pretrained at the quality stage's budget (EPOCHS x STEPS of 128, fold 1),
  # then bench_probes.py: the linear, MLP and context probes trained on the same cached latents, with fit times;
  # the context probe's Key Results row (results/<exp>_context-probe) from classifier_training.py.
  STEPS=${STEPS:-250}; work=/tmp/probes; mkdir -p $work; repo=$(pwd); cd $work
  DATASET="--set data.root_dir=$DATA"
  for cfg in ${ONLY:-CRL_CNN_Attention MP_CNN}; do
    config=$repo/configs/DLPROJ_pretrain_${cfg}_Sleep-EDF-2018.json; ckpt=checkpoints/DLPROJ_pretrain_${cfg}_Sleep-EDF-2018/ckpt_fold-01.pth
    [ -f "$ckpt" ] || python3 $repo/train_$(echo ${cfg%%_*} | tr A-Z a-z).py --config $config --gpu 0 --fold 1 $DATASET \
      --set trainer.max_epochs=$EPOCHS --set trainer.max_steps_per_epoch=$STEPS --set trainer.early_stopping_patience=100 \
      --set trainer.val_period=0 --set probe.run_after_pretraining=false ${EXTRA_SET:-} > "$OUT/pretrain_$cfg.txt" 2>&1 \
      || echo "FAILED pretraining $cfg"
    python3 $repo/benchmarks/bench_probes.py --config $config --ckpt $ckpt --gpu 0 $DATASET --json "$OUT/probes_$cfg.json" \
      2> "$OUT/probes_$cfg.err" | tee "$OUT/probes_$cfg.txt"
    python3 $repo/classifier_training.py --config $config --encoder_ckpt $ckpt --probe context --gpu 0 $DATASET \
      > "$OUT/context_$cfg.txt" 2>&1 || echo "FAILED context probe $cfg"
  done
  tar czf "$OUT/probes.tgz" results 2>/dev/null
  ;;
esac
