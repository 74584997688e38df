"""`framepack-bot run`'s supervision of the worker: restarts with back-off, a clean
stop on SIGTERM (the worker releases its job), and a clear refusal without an
adapter. Children are real processes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from framepack_bot.supervisor import Backoff, WorkerSupervisor
from storage.records import EventKind, JobStatus
from tests.worker_fixtures import (
    REPO,
    enqueue,
    events_of,
    kinds,
    open_store,
    settings_of,
    wait_until,
    worker_env,
    write_config,
)


def child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def starts_of(path: Path) -> list[float]:
    return [float(t) for t in path.read_text().split()] if path.exists() else []


def test_backoff_doubles_up_to_its_maximum() -> None:
    backoff = Backoff(first=1.0, maximum=60.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


async def test_a_dying_worker_is_started_again_with_growing_delays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "framepack_bot.supervisor")
    starts = tmp_path / "starts"
    dying = child(f"""
        import sys, time
        with open({str(starts)!r}, "a") as f:
            f.write(f"{{time.time()}}\\n")
        sys.exit(3)
    """)
    supervisor = WorkerSupervisor(dying, Backoff(first=0.1, maximum=0.4, reset_after=60))
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))

    async def five_starts() -> bool:
        return len(starts_of(starts)) >= 5

    await wait_until(five_starts, timeout=20, what="five starts")
    stop.set()
    await asyncio.wait_for(task, 5)

    times = starts_of(starts)
    gaps = [b - a for a, b in itertools.pairwise(times)][:4]
    for gap, delay in zip(gaps, [0.1, 0.2, 0.4, 0.4], strict=True):
        assert delay <= gap < delay + 1.0
    delays = re.findall(r"code 3 after [\d.]+ s; starting it again in ([\d.]+) s", caplog.text)
    assert delays[:4] == ["0.1", "0.2", "0.4", "0.4"]


async def test_a_worker_that_stayed_up_a_while_starts_the_count_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "framepack_bot.supervisor")
    lives_a_while = child("import sys, time; time.sleep(0.4); sys.exit(1)")
    supervisor = WorkerSupervisor(lives_a_while, Backoff(first=0.1, maximum=5, reset_after=0.3))
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))

    async def three_restarts() -> bool:
        return caplog.text.count("starting it again") >= 3

    await wait_until(three_restarts, timeout=20, what="three restarts")
    stop.set()
    await asyncio.wait_for(task, 5)
    delays = re.findall(r"starting it again in ([\d.]+) s", caplog.text)
    assert set(delays) == {"0.1"}


async def test_stop_sends_sigterm_and_kills_a_worker_that_ignores_it(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = child(f"""
        import signal, time, pathlib
        signal.signal(signal.SIGTERM, lambda *_: pathlib.Path({str(tmp_path / "term")!r}).touch())
        pathlib.Path({str(ready)!r}).touch()
        time.sleep(60)
    """)
    supervisor = WorkerSupervisor(stubborn, Backoff(), stop_grace=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))

    async def is_ready() -> bool:
        return ready.exists()

    await wait_until(is_ready, timeout=10, what="the child")
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert (tmp_path / "term").exists()  # it was asked first
    assert 0.5 <= time.monotonic() - started < 5
    assert supervisor.process is not None and supervisor.process.returncode == -signal.SIGKILL
    assert supervisor.starts == 1


def test_run_without_an_adapter_says_how_to_enable_one(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "framepack_bot.cli", "run", "--config", str(config)],
        cwd=REPO,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "enabled = true" in proc.stderr and "[telegram]" in proc.stderr
    assert "framepack-bot worker" in proc.stderr
    assert "Traceback" not in proc.stderr


SERVE = """
import asyncio, functools, sys
from bot.app import run_bots
from framepack_bot.commands import configure_logging
from framepack_bot.supervisor import serve
from storage.config import load_settings

settings = load_settings(sys.argv[1])
configure_logging(settings)
code = asyncio.run(serve(settings, functools.partial(run_bots, factories={})))
print("torch imported:", "torch" in sys.modules, flush=True)
sys.exit(code)
"""


@pytest.mark.slow
async def test_sigterm_to_run_stops_the_bots_and_the_worker_which_releases_its_job(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    settings = settings_of(config)
    store = await open_store(settings)
    job_id = await enqueue(store, settings, "ann", seconds=3.6, steps=4)
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        # The bot process (no adapters: an empty factory set) and its supervised worker.
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(config)],
            cwd=REPO,
            env=worker_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        async def a_step() -> bool:
            return bool(kinds(await events_of(store, job_id), EventKind.STEP))

        await wait_until(a_step, timeout=90, what="the worker's first step")
        os.kill(proc.pid, signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log_path.read_text()
    assert code == 0, out
    assert "worker stopped (code 0)" in out
    assert f"↩ job {job_id} released" in out
    assert "torch imported: False" in out  # the bot process stays free of torch
    job = await store.get(job_id)
    assert job.status is JobStatus.QUEUED
    assert (await events_of(store, job_id))[-1].kind is EventKind.REQUEUED
    await store.close()


async def test_the_worker_gets_no_chat_token_and_dies_with_run(tmp_path: Path) -> None:
    """The worker never needs the bot tokens: they are not in its environment (any
    process of the user could read /proc/PID/environ). And a worker whose `run` was
    killed with SIGKILL stops too (it asked for its parent's death signal itself)."""
    config = write_config(
        tmp_path,
        telegram={"token_env": "FPB_SECRET_TG"},
        discord={"token_env": "FPB_SECRET_DC"},
    )
    settings = settings_of(config)
    seen = tmp_path / "environ"
    # a worker that records what it was given, then waits like one
    worker = child(f"""
        import os, time
        from framepack_bot.supervisor import die_with_supervisor
        die_with_supervisor()
        with open({str(seen)!r}, "w") as f:
            f.write("\\n".join(sorted(os.environ)))
        time.sleep(120)
    """)
    serve_once = f"""
import asyncio, functools, sys
sys.path.insert(0, {str(REPO)!r})
from bot.app import run_bots
from framepack_bot.supervisor import serve
from storage.config import load_settings

async def main():
    return await serve(load_settings({str(config)!r}), functools.partial(run_bots, factories={{}}),
                       command={worker!r})
sys.exit(asyncio.run(main()))
"""
    env = {
        **worker_env(),
        "FPB_SECRET_TG": "123:telegram-secret",
        "FPB_SECRET_DC": "discord-secret",
    }
    run = subprocess.Popen([sys.executable, "-c", serve_once], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while not seen.exists() or not seen.read_text():
            assert time.monotonic() < deadline, "the worker did not start"
            await asyncio.sleep(0.1)
        names = seen.read_text().split()
        assert "FPB_SECRET_TG" not in names and "FPB_SECRET_DC" not in names
        assert "FRAMEPACK_BOT_SUPERVISOR_PID" in names and "PATH" in names
        ps = subprocess.run(["pgrep", "-f", str(seen)], capture_output=True, text=True)
        worker_pids = [int(p) for p in ps.stdout.split()]
        assert worker_pids
        run.kill()  # SIGKILL: run cannot stop its worker itself
        run.wait(10)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in worker_pids):
            assert time.monotonic() < deadline, "the worker outlived its run"
            await asyncio.sleep(0.1)
    finally:
        if run.poll() is None:
            run.kill()
    assert settings.telegram.token_env == "FPB_SECRET_TG"
