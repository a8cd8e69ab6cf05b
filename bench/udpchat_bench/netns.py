"""Real packet loss for a whole run: a private network namespace whose loopback drops packets.

User-space loss simulation can only drop what a system chooses to hand it; TCP's loss handling
lives in the kernel and can only be exercised by losing real packets. So on Linux, as root,
every process of a run is started inside a fresh namespace where an nftables rule on the
*input* hook drops a random share of TCP and UDP packets. On loopback every packet passes the
input hook exactly once, whatever its direction, so X% means X% of packets each way (data,
ACKs and TCP handshakes alike).

The namespace is private to the run, which also makes the kernel's per-namespace SNMP counters
an exact account of the run's traffic.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

COMMAND_TIMEOUT_S = 10.0
LOSS_RESOLUTION = 10_000
"""The nft rule draws a number modulo this: loss is applied in steps of 0.01%."""

_names = itertools.count()


class KernelLossError(RuntimeError):
    """Setting up the lossy namespace failed."""


def _run(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelLossError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise KernelLossError(f"{' '.join(argv)} exited {done.returncode}: {detail}")
    return done.stdout


def drop_rule(percent: float) -> list[str]:
    """The nft rule dropping ``percent`` % of TCP and UDP packets on the input hook."""
    threshold = round(percent / 100 * LOSS_RESOLUTION)
    return [
        "nft", "add", "rule", "inet", "f", "in",
        "meta", "l4proto", "{ udp, tcp }",
        "numgen", "random", "mod", str(LOSS_RESOLUTION), "<", str(threshold), "drop",
    ]  # fmt: skip


class LossyNamespace:
    """A private network namespace with a filter chain on loopback's input hook, whose loss
    rate can be changed while processes run in it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prefix = ["ip", "netns", "exec", name]

    def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % of TCP and UDP packets from now on (0 stops dropping)."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within [0, 100]")
        _run([*self.prefix, "nft", "flush", "chain", "inet", "f", "in"])
        if percent > 0:
            _run([*self.prefix, *drop_rule(percent)])


@contextmanager
def lossy_namespace() -> Iterator[LossyNamespace]:
    """Create a namespace with loopback up and an empty input filter chain (no loss yet);
    always delete it on exit.

    Processes started inside (``ns.prefix + argv``) must be finished before the block ends:
    deleting the name does not kill them.
    """
    name = f"udpchat-bench-{os.getpid()}-{next(_names)}"
    _run(["ip", "netns", "add", name])
    try:
        namespace = LossyNamespace(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        _run([*namespace.prefix, "nft", "add", "table", "inet", "f"])
        _run(
            [*namespace.prefix, "nft", "add chain inet f in { type filter hook input priority 0; }"]
        )
        yield namespace
    finally:
        with suppress(KernelLossError):
            _run(["ip", "netns", "del", name])


@contextmanager
def kernel_loss(percent: float) -> Iterator[list[str]]:
    """Create a namespace losing ``percent`` % of packets each way; yield the argv prefix that
    runs a command inside it (``prefix + ["python", ...]``). Always torn down on exit.

    ``percent`` 0 still gives a private namespace (useful for exact kernel counters).
    """
    if not 0 <= percent <= 100:
        raise ValueError("percent must be within [0, 100]")
    with lossy_namespace() as namespace:
        namespace.set_loss(percent)
        yield namespace.prefix


@functools.cache
def kernel_loss_available() -> tuple[bool, str]:
    """Whether `kernel_loss` works here, and why not if it does not. Tried once, then cached."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "kernel loss needs root (network namespaces and nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return False, f"'{tool}' not found (install {package})"
    try:
        with kernel_loss(1.0) as prefix:
            ruleset = _run([*prefix, "nft", "list", "ruleset"])
    except KernelLossError as exc:
        return False, f"could not set up a lossy namespace: {exc}"
    if "numgen" not in ruleset:
        return False, "the drop rule did not show up in the namespace's ruleset"
    return True, "ok"
