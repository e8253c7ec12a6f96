"""What ``switchboard up`` shows a person, and where the rest goes.

By default the terminal gets only what a person reads: one line per process when it is ready
(or why it stopped), WARNING and above from every process (with the traceback that follows
an error), and whatever ``up`` itself says (the banner, the demo's table). Every line of every
process goes to ``<data dir>/log/<process>.log`` as the process wrote it, so nothing is lost;
``switchboard logs`` reads those files and ``switchboard up --verbose`` streams them all as
honcho always did.

Celery warns about superuser privileges once per worker process when run as root; that is one
fact about the machine, so it is said once, with how to avoid it.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from honcho.printer import Printer

LOG_DIR_NAME = "log"
SYSTEM = "system"  # honcho's own lines (started, stopped, signals): kept in switchboard.log
SYSTEM_LOG = "switchboard"

# A line that says a process is serving, by process name (anything else: ready when started).
READY: dict[str, re.Pattern[str]] = {
    "web": re.compile(r"Listening at: (\S+)"),
    "worker": re.compile(r"@\S+ ready\.\s*$"),
    "sweeper": re.compile(r"@\S+ ready\.\s*$"),
    "notifier": re.compile(r"@\S+ ready\.\s*$"),
    "beat": re.compile(r"beat: Starting\.\.\."),
    "flower": re.compile(r"Visit me at (\S+)"),
    "simulator": re.compile(r"simulator listening on (\S+)"),
    "messenger-sim": re.compile(r"simulator listening on (\S+)"),
    "inapp-sim": re.compile(r"simulator listening on (\S+)"),
}

# The start of a log record at WARNING or above, in the formats our processes write: Celery
# ("[…: WARNING/MainProcess]"), gunicorn ("[…] [ERROR]"), Flower/tornado ("[W 261204 …]"),
# Python's logging defaults ("ERROR:name:…") and an uncaught exception.
LOUD = re.compile(r": (WARNING|ERROR|CRITICAL)/|\[(WARNING|ERROR|CRITICAL)\]|^\[[WEC] \d{6} "
                  r"|^(WARNING|ERROR|CRITICAL):|^Traceback \(most recent call last\):")
# The start of any log record: what ends the traceback lines that follow a loud one.
RECORD = re.compile(r"^\[|^(DEBUG|INFO|WARNING|ERROR|CRITICAL):")
# Python's warnings module: "path:line: SomeWarning: text", the text's lines, then the
# source line indented by two spaces.
PY_WARNING = re.compile(r"^\S+:\d+: (\w*Warning): ")
SUPERUSER = "running the worker with superuser privileges"
SUPERUSER_NOTE = (
    "note: running as root, so Celery warns that its workers have superuser privileges, which "
    "it does not recommend (said once here for every worker; each log keeps its copy). To "
    "avoid it, run `switchboard up` as an ordinary user, or in a container with a non-root "
    "USER.")
STARTED = re.compile(r"^(\S+) started \(pid=(\d+)\)")
STOPPED = re.compile(r"^(\S+) stopped \(rc=(-?\d+)\)")
SIGNALLED = re.compile(r"^(SIGINT|SIGTERM) received")
# Known to mean nothing while everything starts: Flower asks the workers before they are up.
STARTUP_NOISE: dict[str, re.Pattern[str]] = {
    "flower": re.compile(r"Inspect method \w+ failed"),
}
STARTUP_SECONDS = 20.0
WARNING_BLOCK_MAX_LINES = 12  # a warnings-module block without its source line ends here
LAST_LINES_ON_ERROR = 8


def log_dir(data_dir: Path) -> Path:
    return data_dir / LOG_DIR_NAME


def rotate_logs(directory: Path) -> None:
    """Keep the previous run's logs as ``<process>.log.1``: a crash is often read after the
    next start."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.log"):
        path.replace(path.with_name(path.name + ".1"))


@dataclass
class _Stream:
    """What the console knows of one process's output so far."""

    log: IO[bytes]
    started: float = 0.0
    ready: bool = False
    stopped: bool = False
    following: str = ""  # "record": traceback lines of a loud record; "warning": a py warning
    warning_lines: int = 0
    hide_block: bool = False  # inside the superuser warning (said once, by the console)
    last: deque[str] = field(default_factory=lambda: deque(maxlen=LAST_LINES_ON_ERROR))


class Console:
    """A honcho printer: every line to its process's log file; to the terminal all of it
    (``verbose``) or only what a person needs (the default)."""

    def __init__(self, directory: Path, verbose: bool = False, output: IO[str] | None = None,
                 expected: Iterable[str] = ()) -> None:
        self.directory = directory
        self.verbose = verbose
        self.output = output or sys.stdout
        self.width = 0  # honcho sets it to the longest process name
        self.expected = set(expected)
        self._passthrough = Printer(self.output)
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._began = time.monotonic()
        self._superuser_said = False
        self._stopping = False
        self._all_ready_said = False

    # --- what up and the demo say themselves ---------------------------------------------
    def say(self, text: str, log: bool = True) -> None:
        """A line of our own (banner, demo), never interleaved with a process's line. The
        banner passes ``log=False``: it holds the generated credentials, which the terminal
        shows once and no file keeps."""
        with self._lock:
            print(text, file=self.output, flush=True)
            if log:
                self._stream(SYSTEM_LOG).log.write(text.encode() + b"\n")

    # --- the honcho printer interface ----------------------------------------------------
    def write(self, message: Any) -> None:
        data = message.data.decode("utf-8", "replace") if isinstance(message.data, bytes) \
            else message.data
        name = SYSTEM_LOG if message.name == SYSTEM else message.name
        with self._lock:
            stream = self._stream(name)
            for line in data.splitlines():
                stream.log.write(line.encode("utf-8", "replace") + b"\n")
                if self.verbose:
                    self._passthrough.width = self.width
                    self._passthrough.write(message._replace(data=line + "\n"))
                elif name == SYSTEM_LOG:
                    self._system(line, message.time)
                else:
                    self._line(name, stream, line, message.time)

    def close(self) -> None:
        with self._lock:
            for stream in self._streams.values():
                stream.log.close()

    # --- deciding what a person sees -----------------------------------------------------
    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            log = open(self.directory / f"{name}.log", "ab", buffering=0)  # noqa: SIM115
            stream = self._streams[name] = _Stream(log=log, started=time.monotonic())
        return stream

    def _print(self, at: datetime, name: str, text: str) -> None:
        print(f"{at:%H:%M:%S} {name:<{max(self.width, 13)}} {text}", file=self.output,
              flush=True)

    def _system(self, line: str, at: datetime) -> None:
        if SIGNALLED.match(line) and not self._stopping:
            self._stopping = True
            print(f"{at:%H:%M:%S} stopping every process ({line.split()[0]})", file=self.output,
                  flush=True)
            return
        started, stopped = STARTED.match(line), STOPPED.match(line)
        if started:
            stream = self._stream(started.group(1))
            stream.started = time.monotonic()
            if started.group(1) not in READY:
                self._ready(started.group(1), stream, at, "")
        elif stopped:
            self._stopped(stopped.group(1), int(stopped.group(2)), at)

    def _line(self, name: str, stream: _Stream, line: str, at: datetime) -> None:
        stream.last.append(line)
        pattern = READY.get(name)
        if not stream.ready and pattern is not None:
            found = pattern.search(line)
            if found:
                self._ready(name, stream, at, found.group(1) if found.groups() else "")
        if self._hidden(stream, line) or self._startup_noise(name, stream, line):
            return
        if self._loud(stream, line):
            self._print(at, name, line)

    def _hidden(self, stream: _Stream, line: str) -> bool:
        """The superuser warning block: said once by the console, hidden per process."""
        if SUPERUSER in line:
            stream.hide_block = True
            if not self._superuser_said:
                self._superuser_said = True
                print(SUPERUSER_NOTE, file=self.output, flush=True)
            return True
        if stream.hide_block:
            if line.startswith("  ") and line.strip():  # the source line closes the block
                stream.hide_block = False
            return True
        return False

    def _startup_noise(self, name: str, stream: _Stream, line: str) -> bool:
        pattern = STARTUP_NOISE.get(name)
        return (pattern is not None and bool(pattern.search(line))
                and time.monotonic() - stream.started < STARTUP_SECONDS)

    def _loud(self, stream: _Stream, line: str) -> bool:
        """WARNING and above, and what belongs to it (a traceback, a warning's text)."""
        if stream.following == "warning":
            stream.warning_lines += 1
            if (line.startswith("  ") and line.strip()) or \
                    stream.warning_lines >= WARNING_BLOCK_MAX_LINES:
                stream.following = ""
            return True
        if PY_WARNING.match(line):
            stream.following, stream.warning_lines = "warning", 0
            return True
        if LOUD.search(line):
            stream.following = "record"
            return True
        if RECORD.match(line):
            stream.following = ""
            return False
        return stream.following == "record"

    def _ready(self, name: str, stream: _Stream, at: datetime, where: str) -> None:
        stream.ready = True
        took = time.monotonic() - stream.started
        self._print(at, name, f"ready{f' at {where}' if where else ''} ({took:.1f} s)")
        if self.expected and not self._all_ready_said and all(
                n in self._streams and self._streams[n].ready for n in self.expected):
            self._all_ready_said = True
            print(f"{at:%H:%M:%S} all {len(self.expected)} processes are ready "
                  f"({time.monotonic() - self._began:.1f} s); their logs: {self.directory}/",
                  file=self.output, flush=True)

    def _stopped(self, name: str, code: int, at: datetime) -> None:
        """A process that stops by itself takes every other one down (honcho): say which,
        why (its last lines), and only once that the others are stopping."""
        stream = self._stream(name)
        stream.stopped = True
        if self._stopping:
            if not stream.ready and code not in (0, -15):
                self._print(at, name, f"exited with code {code} before it was ready "
                                      f"({self.directory / f'{name}.log'})")
            return
        self._stopping = True
        log = self.directory / f"{name}.log"
        state = "before it was ready" if not stream.ready else "by itself"
        self._print(at, name, f"exited with code {code} {state}; its last lines ({log}):")
        for line in stream.last:
            print(f"    {line}", file=self.output, flush=True)
        print(f"{at:%H:%M:%S} stopping every other process", file=self.output, flush=True)


# --- switchboard logs ---------------------------------------------------------------------

def log_names(directory: Path) -> list[str]:
    """The processes that have a log in ``directory`` (this run's, not the rotated ones)."""
    return sorted(p.stem for p in directory.glob("*.log"))


def tail(path: Path, lines: int | None) -> list[str]:
    """The last ``lines`` lines of a log (all of them with None)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line.rstrip("\n") for line in (deque(handle, maxlen=lines) if lines else handle)]


def show(directory: Path, names: list[str], lines: int | None, out: IO[str]) -> dict[str, int]:
    """Print the logs of ``names`` (prefixed with the process's name when there are several);
    returns where each file ended, for ``follow``."""
    prefixed = len(names) > 1
    width = max(len(n) for n in names)
    ends = {}
    for name in names:
        path = directory / f"{name}.log"
        for line in tail(path, lines):
            print(f"{name:<{width}} | {line}" if prefixed else line, file=out)
        ends[name] = path.stat().st_size
    out.flush()
    return ends


def follow(directory: Path, names: list[str] | None, ends: dict[str, int], out: IO[str],
           until: Callable[[], bool] = lambda: False, interval: float = 0.2) -> None:
    """Print lines as they are written (every log, new ones too, when ``names`` is None),
    until ``until()`` or Ctrl-C. A log that shrank was started afresh: read from its start."""
    partial: dict[str, bytes] = {}
    while not until():
        current = names if names is not None else log_names(directory)
        prefixed = names is None or len(current) > 1
        width = max((len(n) for n in current), default=0)
        for name in current:
            path = directory / f"{name}.log"
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            start = ends.get(name, 0)
            if size < start:
                start, partial[name] = 0, b""
            if size == start:
                continue
            with open(path, "rb") as handle:
                handle.seek(start)
                chunk = partial.get(name, b"") + handle.read(size - start)
            ends[name] = size
            *complete, partial[name] = chunk.split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", "replace")
                print(f"{name:<{width}} | {line}" if prefixed else line, file=out)
            out.flush()
        time.sleep(interval)
