"""Tiny launcher: `python -I -S bench/measure.py RESULT.json TIMEOUT -- argv...`

Runs argv, waits for it with wait4 and writes
{"rc", "wall_s", "utime", "stime", "maxrss_kib", "timed_out", "interrupted"}.
SIGUSR1 to the launcher kills the tool with SIGKILL (`kill -9`, the resume profile's crash) and
the launcher still reports its rusage: "interrupted" is then true and rc is -9.

Why a separate process: on Linux a child's ru_maxrss starts from the high-water mark of the
process that forked it (kept across exec), so children forked directly from the harness (which
has pyarrow loaded) would all report the harness's RSS. This launcher is a bare interpreter, so
what it forks starts near zero. wait4's rusage covers the child plus every descendant it reaped.
Imports stay minimal on purpose.
"""

import json
import os
import signal
import sys
import time


def main() -> int:
    result_path, timeout = sys.argv[1], float(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1:]
    interrupt = []
    signal.signal(signal.SIGUSR1, lambda *_: interrupt.append(True))  # before the tool exists
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, dict(os.environ))
    deadline = t0 + timeout
    timed_out = interrupted = False
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            break
        if interrupt and not interrupted:
            interrupted = True
            os.kill(pid, signal.SIGKILL)
            continue
        if time.perf_counter() > deadline:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    with open(result_path + ".tmp", "w") as f:
        json.dump({"rc": rc, "wall_s": wall, "utime": usage.ru_utime, "stime": usage.ru_stime,
                   "maxrss_kib": usage.ru_maxrss, "timed_out": timed_out,
                   "interrupted": interrupted}, f)
    os.replace(result_path + ".tmp", result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
