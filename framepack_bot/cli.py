"""The `framepack-bot` command line: run, worker, animate, doctor, calibrate-cache.

Each subcommand imports its package only when it runs, so `framepack-bot doctor`
and `framepack-bot run` (the bot process) never import torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framepack-bot",
        description="A Discord and Telegram bot that animates pictures with FramePack.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the chat bot(s) and a supervised GPU worker")
    run.add_argument("--config", default="config.toml", help="TOML config (default: config.toml)")

    worker = sub.add_parser("worker", help="one GPU worker alone")
    worker.add_argument(
        "--config", default="config.toml", help="TOML config (default: config.toml)"
    )
    worker.add_argument(
        "--burst", action="store_true", help="exit once the queue is empty (for tests and scripts)"
    )

    doctor = sub.add_parser("doctor", help="check what the bot needs and say how to fix it")
    doctor.add_argument(
        "--config", default="config.toml", help="TOML config (default: config.toml)"
    )

    animate = sub.add_parser("animate", help="render one video locally with a progress bar")
    from framepack_bot.animate_args import add_animate_arguments

    add_animate_arguments(animate)

    calibrate = sub.add_parser(
        "calibrate-cache", help="record MagCache's ratios on the real model (needs a GPU)"
    )
    from framepack_bot.calibrate import add_calibrate_arguments

    add_calibrate_arguments(calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "animate":
        from framepack_bot.commands import NO_WORKER_PACKAGES, has_worker_packages

        if not has_worker_packages():
            print(f"framepack-bot animate: {NO_WORKER_PACKAGES}", file=sys.stderr)
            return 2
        from framepack_bot.animate import main as animate_main

        return animate_main(args)
    if args.command == "calibrate-cache":
        from framepack_bot.commands import NO_WORKER_PACKAGES, has_worker_packages

        if not has_worker_packages():
            print(f"framepack-bot calibrate-cache: {NO_WORKER_PACKAGES}", file=sys.stderr)
            return 1
        from framepack_bot.calibrate import main as calibrate_main

        return calibrate_main(args)
    if args.command == "doctor":
        from framepack_bot.doctor import main as doctor_main

        return doctor_main(args)
    if args.command == "worker":
        from framepack_bot.commands import worker_main

        return worker_main(args)
    if args.command == "run":
        from framepack_bot.commands import run_main

        return run_main(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
