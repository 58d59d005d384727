# Sourced by run_gpu_benchmark.sh (and tests/test_detached.py); needs OUT and a function mps_stop.
# Detached runs outlive the device call that starts them (their own session, setsid), so one measurement can span
# several calls on the same warm machine. `detach NAME CMD...` starts CMD, its output in $DETACHED/NAME.log and its
# exit status in $DETACHED/NAME.rc; `detached_wait` waits up to WAIT_S s for all of them, prints each log's last
# line, copies the logs and $DETACHED/out/* to $OUT and stops MPS once none is left running.
DETACHED=${DETACHED:-/tmp/detached}
detach() {
  local name=$1; shift; mkdir -p $DETACHED/out
  local run=$DETACHED/$name tries=0
  # the log exists and a stale exit status is gone before detach returns, so a wait right after counts the run
  rm -f $run.rc $run.pid; : > $run.log
  setsid bash -c 'echo $$ > "$0.pid"; "$@"; echo $? > "$0.rc"' $run "$@" >> $run.log 2>&1 < /dev/null &
  # return once the run is in a session of its own, out of reach of the kill of this call's process group
  until [ -s $run.pid ]; do
    tries=$((tries + 1)); [ $tries -le 100 ] || { echo "detach $name: the run did not start (see $run.log)"; return 1; }
    sleep 0.1
  done
  echo "detached $name (pid $(cat $run.pid))"
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
  local reports=($DETACHED/out/*)
  [ ${#reports[@]} = 0 ] || cp "${reports[@]}" "$OUT/"
  if [ $running = 0 ]; then
    echo "all detached runs ended"
    if [ -f $DETACHED/mps ]; then mps_stop && rm $DETACHED/mps; fi
  else
    echo "$running detached run(s) still running: call 'bash benchmarks/run_gpu_benchmark.sh poll' within 30 s"
  fi
}
