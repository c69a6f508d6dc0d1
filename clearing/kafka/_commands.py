"""``clearing run`` and ``clearing topics create``: configuration, logging and signals
around the daemon and the topic creator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import msgspec

from clearing.kafka._clients import ACCESS_ERRORS, access_error_message
from clearing.kafka._connect import ConnectError
from clearing.kafka._daemon import Daemon
from clearing.kafka._topics import create_topics
from clearing.ops.config import Config, ConfigError, load_config
from clearing.ops.logging import configure_logging

__all__ = ["run_command", "run_daemon", "topics_command"]

log = logging.getLogger("clearing.kafka")


_EXIT_USAGE = 2  # the CLI's code for "fix the command line or the configuration"


def _load(args: argparse.Namespace) -> Config | None:
    """The configuration, or None after printing what is wrong with it."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        # Printed here rather than raised as clearing.cli.UserError: under
        # `python -m clearing.cli` that module is __main__, a different class object.
        print(f"clearing {args.command}: error: {exc}", file=sys.stderr)
        return None


def _configure_logging(config: Config) -> None:
    security = config.kafka.security
    configure_logging(
        config.log.level,
        config.log.json,
        secrets=[
            security.sasl_password.get() if security.sasl_password else None,
            security.ssl_password.get() if security.ssl_password else None,
        ],
    )


async def run_daemon(config: Config) -> int:
    """Run the daemon until SIGTERM/SIGINT or failure; returns the exit code."""
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        return await daemon.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def run_command(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return _EXIT_USAGE
    role = getattr(args, "role", None)
    if role is not None:  # the command line wins over the file and the environment
        config = msgspec.structs.replace(
            config, daemon=msgspec.structs.replace(config.daemon, role=role)
        )
    _configure_logging(config)
    log.info("configuration: %s", config.redacted())
    return asyncio.run(run_daemon(config))


def topics_command(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return _EXIT_USAGE
    _configure_logging(config)
    try:
        report = asyncio.run(create_topics(config))
    except ConnectError as exc:
        print(f"clearing topics create: error: {exc.message}", file=sys.stderr)
        return exc.code
    except ACCESS_ERRORS as exc:
        message = access_error_message(config, exc)
        print(f"clearing topics create: error: {message}", file=sys.stderr)
        return _EXIT_USAGE
    for name in report.created:
        print(f"created  {name}")
    for name in report.existing:
        print(f"exists   {name}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in report.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if report.problems else 0
