# Sourced by run_gpu_benchmark.sh (and tests/test_detached.py); needs OUT and a function mps_stop.
# Detached runs outlive the device call that starts them (their own session, setsid), so one measurement can span
# several calls on the same warm machine. `detach NAME CMD...` starts CMD, its output in $DETACHED/NAME.log and its
# exit status in $DETACHED/NAME.rc; `detached_wait` waits up to WAIT_S s for all of them, prints each log's last
# line, copies the logs and $DETACHED/out/* to $OUT and stops MPS once none is left running.
DETACHED=${DETACHED:-/tmp/detached}
detach() {
  local name=$1; shift; mkdir -p $DETACHED/out
  setsid bash -c '"$@"; echo $? > '"$DETACHED/$name.rc" _ "$@" > "$DETACHED/$name.log" 2>&1 < /dev/null &
  echo "detached $name (pid $!)"
}
detached_wait() {
  local until=$(( $(date +%s) + ${WAIT_S:-540} )) running log
  shopt -s nullglob
  while :; do
    running=0
    for log in $DETACHED/*.log; do [ -f "${log%.log}.rc" ] || running=$((running + 1)); done
    [ $running = 0 ] || [ $(date +%s) -ge $until ] && break
    sleep 10
  done
  for log in $DETACHED/*.log; do
    echo "$(basename $log .log): rc $(cat ${log%.log}.rc 2>/dev/null || echo 'running'); $(tr '\r' '\n' < $log | grep -v '^\s*$' | tail -1)"
    tr '\r' '\n' < $log | grep -v -E 'it/s|s/it|^\s*$' > "$OUT/$(basename $log)"
  done
  cp $DETACHED/out/* "$OUT/" 2>/dev/null
  if [ $running = 0 ]; then
    echo "all detached runs ended"
    [ -f $DETACHED/mps ] && mps_stop && rm $DETACHED/mps
  else
    echo "$running detached run(s) still running: call 'bash benchmarks/run_gpu_benchmark.sh poll' within 30 s"
  fi
}
