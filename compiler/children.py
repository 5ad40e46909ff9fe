"""Child processes that die with moat: the validators a build runs (verify.run_command).

Each child runs in its own session, so its process group holds it and everything it starts (a
wrapper script's tool, that tool's helpers) and one killpg(2) stops them all. Three ways out:
- moat handles SIGTERM and SIGINT (handle_signals): it kills every running child's group, starts
  no new one, and raises Terminated / KeyboardInterrupt in the main thread, so the build's
  cleanup (the store's temporary tree) runs and the command line prints one line, no traceback.
- moat is killed outright (SIGKILL, a crash): on Linux each child has PR_SET_PDEATHSIG, so the
  kernel kills it when moat dies; and one watcher process (a few lines of Python, started with
  the first child, in a session of its own) holds the other end of a pipe on which moat names
  every child's group: when moat is gone the pipe ends, and the watcher kills the groups still
  named. The death signal reaches the direct child only, the watcher its whole group.
- a child that outlives its timeout: its group is killed.

Imports nothing of moat's, and subprocess only when a child starts: every command line installs
the signal handlers, and `moat check` starts no child.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess

# the watcher: reads "+PGID" / "-PGID" lines until moat's end of the pipe closes, then kills
# the groups still running
WATCHER = """\
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:
    sign, pgid = line[:1], int(line[1:] or 0)
    (groups.add if sign == b"+" else groups.discard)(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""

PR_SET_PDEATHSIG = 1

_lock = threading.Lock()
_groups: set[int] = set()
_stopping: signal.Signals | None = None
_watcher: subprocess.Popen | None = None
_prctl = None


class Terminated(BaseException):
    """moat was asked to stop (SIGTERM): raised in the main thread, and by run() once stopping."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _death_signal():
    """prctl(2) from libc, loaded once in moat (not in the forked child), or None off Linux."""
    global _prctl
    if _prctl is None:
        try:
            import ctypes
            _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else False
        except (OSError, AttributeError):
            _prctl = False
    return _prctl or None


def _in_child(parent: int, prctl):
    """preexec_fn: die with moat (the death signal, and moat already gone before it was set)."""
    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
    return setup


def _start_watcher() -> None:
    global _watcher
    if _watcher is None:
        import subprocess

        _watcher = subprocess.Popen([sys.executable, "-S", "-c", WATCHER], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _tell_watcher(line: str) -> None:
    try:
        os.write(_watcher.stdin.fileno(), line.encode())
    except OSError:  # the watcher is gone: the death signal still reaches the children
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True, stdin=DEVNULL, timeout=...), in a process
    group of its own that dies with moat (module docstring). Raises Terminated once moat stops."""
    import subprocess

    with _lock:
        if _stopping is not None:
            raise Terminated(_stopping)
        _start_watcher()  # before the first child: from its start on, moat's death is seen
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=_in_child(os.getpid(), _death_signal()))
        _groups.add(proc.pid)
        _tell_watcher(f"+{proc.pid}\n")
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:  # the timeout, or moat stopping
        _kill_group(proc.pid)
        proc.communicate()
        raise
    finally:
        with _lock:
            _groups.discard(proc.pid)
            _tell_watcher(f"-{proc.pid}\n")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """A long-lived child talked to through pipes (stdin, stdout; stderr to /dev/null), in a group
    of its own that dies with moat like run()'s; end it with finish(). Raises Terminated once
    moat stops."""
    import subprocess

    with _lock:
        if _stopping is not None:
            raise Terminated(_stopping)
        _start_watcher()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=env, start_new_session=True, preexec_fn=_in_child(os.getpid(), _death_signal()))
        _groups.add(proc.pid)
        _tell_watcher(f"+{proc.pid}\n")
    return proc


def check_stopping() -> None:
    """Raise Terminated once moat stops (a spawn()ed child's pipe just ended: that is why)."""
    if _stopping is not None:
        raise Terminated(_stopping)


def finish(proc: subprocess.Popen) -> None:
    """End a spawn()ed child and what it started."""
    _kill_group(proc.pid)
    proc.wait()
    with _lock:
        _groups.discard(proc.pid)
        _tell_watcher(f"-{proc.pid}\n")


def stop(signum: int = signal.SIGTERM) -> None:
    """Kill every running child's group; run() starts no new child from now on."""
    global _stopping
    with _lock:
        _stopping = signal.Signals(signum)
        for pgid in _groups:
            _kill_group(pgid)


def _on_signal(signum: int, _frame) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second one does not cut the cleanup short
    stop(signum)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


def handle_signals() -> dict:
    """SIGTERM and SIGINT stop the children, then raise Terminated / KeyboardInterrupt in the main
    thread. Returns the handlers it replaced (for restore()); nothing off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
