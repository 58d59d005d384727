"""benchmarks/detached.sh: runs started by one device call that outlive it, and the wait that collects them."""
import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bash(script: str, tmp_path: Path, wait_s: int) -> str:
    """Run `script` after sourcing detached.sh, with $DETACHED and $OUT in tmp_path and a stand-in mps_stop, as
    the device tool runs a call: in a process group of its own, which is killed when the call returns."""
    env = {**os.environ, "DETACHED": str(tmp_path / "detached"), "OUT": str(tmp_path / "out"), "WAIT_S": str(wait_s)}
    (tmp_path / "out").mkdir(exist_ok=True)
    prelude = f"source {REPO / 'benchmarks' / 'detached.sh'}; mps_stop() {{ echo 'MPS stopped'; }}\n"
    call = subprocess.Popen(["bash", "-c", prelude + script], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    out = call.communicate()[0]
    assert call.returncode == 0
    try:
        os.killpg(call.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing of the call's group is left
        pass
    return out


def sleeping_runs(command: str = "sleep 299", count: int = 1, tries: int = 50) -> list[str]:
    """Pids of the detached runs of `command`, once `count` have started (one may start after detach returns)."""
    pids = []
    for _ in range(tries):
        pids = subprocess.run(["pgrep", "-f", f"^{command}$"], capture_output=True, text=True).stdout.split()
        if len(pids) >= count:
            break
        time.sleep(0.2)
    return pids


def test_the_wait_reports_each_runs_exit_status_and_brings_back_its_log(tmp_path):
    out = bash("""detach ok bash -c 'printf "epoch 1\\rval loss 3.1\\n"; echo done'
                  detach bad bash -c 'echo broken >&2; exit 7'
                  touch $DETACHED/mps
                  detached_wait""", tmp_path, wait_s=60)
    assert "ok: rc 0; done" in out and "bad: rc 7; broken" in out
    assert "all detached runs ended" in out and "MPS stopped" in out
    assert not (tmp_path / "detached" / "mps").exists()
    # progress lines rewritten with \r become lines of their own in the log that comes back
    assert (tmp_path / "out" / "ok.log").read_text().splitlines() == ["epoch 1", "val loss 3.1", "done"]


def test_a_run_still_going_at_the_deadline_outlives_the_call(tmp_path):
    out = bash("detach slow sleep 299; detached_wait", tmp_path, wait_s=0)
    assert "slow: rc running" in out and "1 detached run(s) still running" in out and "MPS stopped" not in out
    pids = sleeping_runs()
    assert pids, "the detached run was killed with the call that started it"
    for pid in pids:
        os.killpg(os.getpgid(int(pid)), signal.SIGTERM)


def test_a_wait_right_after_detach_counts_the_run_as_running(tmp_path):
    # a stale exit status of an earlier run with the same name must not make the new one look ended
    (tmp_path / "detached").mkdir()
    (tmp_path / "detached" / "late.rc").write_text("0\n")
    out = bash("""for i in 1 2 3 4 5; do detach late$i sleep 298 > /dev/null; done
                  detach late sleep 298 > /dev/null
                  detached_wait""", tmp_path, wait_s=0)
    assert "6 detached run(s) still running" in out and "late: rc running" in out
    for pid in sleeping_runs("sleep 298", count=6):
        os.killpg(os.getpgid(int(pid)), signal.SIGTERM)


def test_the_wait_succeeds_when_all_runs_ended_and_no_mps_was_started(tmp_path):
    out = bash("detach quick true; detached_wait", tmp_path, wait_s=60)
    assert "quick: rc 0" in out and "all detached runs ended" in out and "MPS stopped" not in out
