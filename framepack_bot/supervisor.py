"""`framepack-bot run`: the chat bot(s) and one GPU worker subprocess, in one command.

The worker is a child process (`framepack-bot worker --config ...`), so the bot
process never imports torch and a crash of the GPU stack never takes the bots
down. A worker that dies is started again after 1, 2, 4 … seconds, up to
`[worker] restart_backoff_max`; one that stayed up a while starts the count
over. SIGINT or SIGTERM stops both: the bots disconnect, the worker gets
SIGTERM, puts its job back in the queue at the next step boundary and exits.
On a host without the worker's packages `run` serves the bots alone, and the
worker runs elsewhere (`framepack-bot worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from storage.config import Settings

log = logging.getLogger("framepack_bot.supervisor")

STOP_GRACE = 45.0  # seconds a stopping worker gets to release its job before SIGKILL


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before the next start of a worker that died."""

    first: float = 1.0
    maximum: float = 60.0
    reset_after: float = 60.0  # a worker up this long was healthy: the count starts over

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th death in a row (1-based)."""
        return min(self.maximum, self.first * 2 ** max(0, failures - 1))


def worker_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "framepack_bot.cli", "worker", "--config", str(config)]


PARENT_ENV = "FRAMEPACK_BOT_SUPERVISOR_PID"  # tells the worker who supervises it


def worker_env(settings: Settings) -> dict[str, str]:
    """The worker's environment: ours without the secrets it never needs (the chat
    tokens, the web page's password), so no other process can read them from its
    /proc/PID/environ; plus the supervisor's pid (see `die_with_supervisor`)."""
    secrets = {settings.telegram.token_env, settings.discord.token_env, settings.web.password_env}
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    env[PARENT_ENV] = str(os.getpid())
    return env


def die_with_supervisor() -> None:
    """In a worker that `run` started: get SIGTERM when `run` dies, even by SIGKILL
    (Linux), so a killed `run` leaves no worker holding the GPU beside the next one.

    Done by the worker itself after it started (a `preexec_fn` would do it between
    fork and exec, which Python documents as unsafe in a process with threads, as
    the bot process is). Had `run` died before this, the worker exits at once.
    """
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    if sys.platform == "linux":
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):
        log.error("the framepack-bot run that started this worker is gone; exiting")
        sys.exit(0)


# (exit code, seconds it ran, seconds until the next start) of a worker that died
OnRestart = Callable[[int | None, float, float], Awaitable[None]]


async def record_restart(settings: Settings, code: int | None, uptime: float, delay: float) -> None:
    """Write a worker's death to the store: the host's page says "restarting after a
    crash" and /metrics counts it (a connection of its own: crashes are rare)."""
    from storage.store import JobStore

    try:
        async with await JobStore.open(settings.database_path) as store:
            await store.record_restart(code, uptime, delay)
    except Exception as exc:  # the restart itself matters more than its record
        log.warning("could not record the worker's restart: %s", exc)


class WorkerSupervisor:
    """Keeps one worker process running until `stop` is set."""

    def __init__(
        self,
        command: Sequence[str],
        backoff: Backoff,
        *,
        env: dict[str, str] | None = None,
        stop_grace: float = STOP_GRACE,
        clock: Callable[[], float] = time.monotonic,
        on_restart: OnRestart | None = None,
    ) -> None:
        self.command = list(command)
        self.env = env
        self.backoff = backoff
        self.stop_grace = stop_grace
        self.clock = clock
        self.on_restart = on_restart
        self.starts = 0
        self.process: asyncio.subprocess.Process | None = None

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            started = self.clock()
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdin=subprocess.DEVNULL, env=self.env
            )
            self.starts += 1
            log.info("worker started (pid %d)", self.process.pid)
            exited = asyncio.create_task(self.process.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not exited.done():
                await self._terminate(self.process, exited)
                return
            if stop.is_set():  # it got the same Ctrl-C and stopped first
                return
            uptime = self.clock() - started
            failures = 1 if uptime >= self.backoff.reset_after else failures + 1
            delay = self.backoff.delay(failures)
            log.warning(
                "worker exited with code %s after %.1f s; starting it again in %.1f s",
                exited.result(),
                uptime,
                delay,
            )
            if self.on_restart is not None:
                await self.on_restart(exited.result(), uptime, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _terminate(self, process: asyncio.subprocess.Process, exited: asyncio.Task) -> None:
        log.info("stopping the worker (pid %d)", process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(asyncio.shield(exited), self.stop_grace)
        except TimeoutError:
            log.warning("the worker did not stop in %.0f s; killing it", self.stop_grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await exited
        log.info("worker stopped (code %s)", code)


RunBots = Callable[[Settings, asyncio.Event], Awaitable[None]]


def worker_runs_here(settings: Settings) -> bool:
    """Whether `run` starts a worker beside the bots ([worker] run_here)."""
    if settings.worker.run_here != "auto":
        return settings.worker.run_here == "yes"
    return importlib.util.find_spec("torch") is not None


async def serve(
    settings: Settings,
    run_bots: RunBots,
    *,
    command: Sequence[str] | None = None,
    backoff: Backoff | None = None,
) -> int:
    """Run the bots and a supervised worker until SIGINT or SIGTERM; 0 on a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    tasks = {"the chat bots": asyncio.create_task(run_bots(settings, stop), name="bots")}
    if command is not None or worker_runs_here(settings):
        if command is None:
            if settings.source is None:
                raise ValueError("the worker needs the config file: settings.source is not set")
            command = worker_command(Path(settings.source).resolve())
        supervisor = WorkerSupervisor(
            command,
            backoff or Backoff(maximum=settings.worker.restart_backoff_max),
            env=worker_env(settings),
            on_restart=functools.partial(record_restart, settings),
        )
        tasks["the worker supervisor"] = asyncio.create_task(
            supervisor.run(stop), name="worker-supervisor"
        )
    else:
        log.info(
            "no worker here (this install has no torch: `pip install framepack-bot[worker]`); "
            "jobs wait for `framepack-bot worker` on the GPU host, with the same database"
        )
    try:
        await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # either ended: stop the other one too
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    code = 0
    for name, task in tasks.items():
        exc = task.exception()
        if exc is not None:
            if _expected(exc):  # a wrong token, an unreachable API: the sentence is enough
                log.error("%s", exc)
            else:
                log.error("%s stopped with an error", name, exc_info=exc)
            code = 1
    return code


def _expected(exc: BaseException) -> bool:
    from bot.adapters import AdapterStartFailed  # the bot package, loaded by now

    return isinstance(exc, AdapterStartFailed)
