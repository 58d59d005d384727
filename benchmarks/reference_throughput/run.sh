#!/usr/bin/env bash
# The reference's own pretraining throughput (RaphaelKreft/DeepLearningProject): its train_mp.py, loaders,
# masking and configs as they are, batch 128, fold 1, for MP_CNN_Attention then MP_CNN. Nothing of the
# reference is in this repo; point REF_REPO at a clone of it.
#
#   git clone https://github.com/RaphaelKreft/DeepLearningProject /path/to/reference
#   REF_REPO=/path/to/reference OUT=results/reference_throughput bash benchmarks/reference_throughput/run.sh
#
#   needs prepared NPZ nights at ${REF_DATA:-/tmp/sedf/npz} (flat SC4ssNE0.npz files, as prepare or
#   make_surrogate.py --format npz writes them)
#   knobs: REF_SECONDS (100, per config, start-up included), REF_WARMUP (50 train steps dropped),
#          REF_CFGS ("MP_CNN_Attention MP_CNN"), REF_DATA, REF_WORK (/tmp/refbench), REF_PY (python3),
#          REF_WHEELS (a folder of termcolor/terminaltables wheels, for a machine without internet)
#   writes $OUT/ref_<cfg>.txt (its output, one timestamped line per progress record) and
#   $OUT/ref_throughput.txt (one line per config; the method is in throughput.py's docstring).
#
# What is arranged around the reference (nothing in its code or configs is edited):
#  1. its tree is copied to $REF_WORK and run from there: its paths are cwd-relative (./split_idx, root_dir "./",
#     logs/, checkpoints/), so its logs and early-stopping checkpoints land under /tmp.
#  2. $REF_WORK/dset/Sleep-EDF-2018/npz/Fpz-Cz links to $REF_DATA (its loader globs
#     <root_dir>/dset/<dataset.name>/npz/<dataset.eeg_channel>/*.npz and splits by int(name[3:5])).
#  3. termcolor and terminaltables (imported by its utils.py) go into /tmp/refsite, first on PYTHONPATH;
#     it also needs timm, tensorboard, scipy and scikit-learn.
#  4. its output goes through stamp.py, which timestamps each '\r'-ended progress record. PYTHONUNBUFFERED is
#     not set: its progress bar flushes once per step, after loss.item(), a GPU sync.
#  5. `timeout` stops it after REF_SECONDS (it pretrains for up to 500 epochs). Its CLI: --config, --gpu 0,
#     --seed 42; train_mp.py fixes fold 1. It validates every 1,298 steps; those passes and each epoch's
#     DataLoader start are cut out of the steady figure.
#  6. only where `from scipy.ndimage.interpolation import shift` fails (newer scipy): a sitecustomize.py in
#     /tmp/refsite aliases that module to scipy.ndimage (masked-prediction training never calls shift).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_SRC=${REF_REPO:?set REF_REPO to a clone of RaphaelKreft/DeepLearningProject}
: "${OUT:?set OUT}"; mkdir -p "$OUT"
SECS=${REF_SECONDS:-100}; WARM=${REF_WARMUP:-50}; DATA=${REF_DATA:-/tmp/sedf/npz}; WORK=${REF_WORK:-/tmp/refbench}
PY=${REF_PY:-python3}; CFGS=${REF_CFGS:-"MP_CNN_Attention MP_CNN"}
ls "$DATA"/SC4*.npz > /dev/null 2>&1 || { echo "no SC4*.npz in $DATA" | tee -a "$OUT/ref_throughput.txt"; exit 1; }

rm -f /tmp/refsite/sitecustomize.py
if [ -n "${REF_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/refsite "$REF_WHEELS"/*.whl
else
  "$PY" -m pip install -q --no-compile --upgrade --target /tmp/refsite termcolor terminaltables
fi > /dev/null 2>&1 || echo "[reference_throughput] installing termcolor/terminaltables failed" >&2
export PYTHONPATH=/tmp/refsite${PYTHONPATH:+:$PYTHONPATH}
# fallback only (shim 6): its transform.py imports scipy.ndimage.interpolation (deprecated namespace; unused by MP)
if [ -n "${REF_FORCE_SCIPY_SHIM:-}" ] || ! "$PY" -c 'from scipy.ndimage.interpolation import shift' > /dev/null 2>&1; then
  printf '%s\n' 'import sys, types, scipy.ndimage as _nd' \
    '_m = types.ModuleType("scipy.ndimage.interpolation"); _m.shift = _nd.shift' \
    'sys.modules.setdefault("scipy.ndimage.interpolation", _m); _nd.interpolation = sys.modules["scipy.ndimage.interpolation"]' \
    > /tmp/refsite/sitecustomize.py
  echo "[reference_throughput] scipy.ndimage.interpolation missing: aliased to scipy.ndimage via /tmp/refsite/sitecustomize.py" >&2
fi

rm -rf "$WORK"; mkdir -p "$WORK"; cp -r "$REPO_SRC/." "$WORK/"; rm -rf "$WORK/.git"
mkdir -p "$WORK/dset/Sleep-EDF-2018/npz"; ln -sfn "$DATA" "$WORK/dset/Sleep-EDF-2018/npz/Fpz-Cz"
DEV=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
TV=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)

for c in $CFGS; do
  cfg=configs/DLPROJ_pretrain_${c}_Sleep-EDF-2018.json
  log="$OUT/ref_${c}.txt"
  t0=$(date +%s)
  ( cd "$WORK" && timeout -k 15 "$SECS" "$PY" train_mp.py --config "$cfg" --gpu 0 --seed 42 2>&1 ) | "$PY" "$HERE/stamp.py" > "$log"
  rc=${PIPESTATUS[0]}
  bs=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['training_params']['batch_size'])" "$WORK/$cfg")
  "$PY" "$HERE/throughput.py" "$log" "$c" --batch "$bs" --warmup "$WARM" \
    --extra "| rc $rc (124 = stopped by timeout ${SECS}s as planned), $(( $(date +%s) - t0 )) s, ${DEV:-no GPU}, torch $TV" \
    >> "$OUT/ref_throughput.txt"
  tail -1 "$OUT/ref_throughput.txt"
done
