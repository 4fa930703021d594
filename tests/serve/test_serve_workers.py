"""A worker of `freshrec serve --workers N` ends with its supervisor (`end_with_supervisor`), each case in
processes of its own (the kernel's death signal would otherwise be set on the test's own process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

from freshrec.serve.workers import SUPERVISOR_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")

# a worker: told that its supervisor is its parent, it says so and waits for a signal
WORKER = ("import os, signal; from freshrec.serve.workers import SUPERVISOR_ENV, end_with_supervisor; "
          "os.environ[SUPERVISOR_ENV] = str(os.getppid()); end_with_supervisor(); "
          "print(os.getpid(), flush=True); signal.pause()")
# a supervisor: starts that worker and waits with it
SUPERVISOR = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {WORKER!r}])"


def _gone(pid: int) -> bool:
    """`pid` has exited: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_worker_ends_when_its_supervisor_is_killed() -> None:
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(supervisor.stdout.readline())
        assert not _gone(worker)
        supervisor.kill()   # SIGKILL: the supervisor stops nothing itself
        supervisor.wait()
        wait_until(lambda: _gone(worker), "the worker ends with its supervisor", timeout=60)
    finally:
        supervisor.kill()
        supervisor.wait()
        if worker is not None and not _gone(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_worker_whose_supervisor_is_already_gone_ends_at_once() -> None:
    code = (f"import os; os.environ[{SUPERVISOR_ENV!r}] = '1'; "
            "from freshrec.serve.workers import end_with_supervisor; end_with_supervisor()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "the supervisor (pid 1) is gone" in done.stderr


@pytest.mark.parametrize(("in_a_worker", "death_signal"), [(True, signal.SIGTERM), (False, 0)])
def test_only_a_worker_asks_the_kernel_for_a_death_signal(in_a_worker: bool, death_signal: int) -> None:
    code = ("import ctypes; from freshrec.serve.workers import end_with_supervisor; end_with_supervisor(); "
            "death = ctypes.c_int(-1); ctypes.CDLL(None).prctl(2, ctypes.byref(death), 0, 0, 0); print(death.value)")
    environment = {name: value for name, value in os.environ.items() if name != SUPERVISOR_ENV}
    if in_a_worker:
        environment[SUPERVISOR_ENV] = str(os.getpid())   # the parent of the process below
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == death_signal   # PR_GET_PDEATHSIG
