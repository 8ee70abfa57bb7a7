#!/usr/bin/env python3
"""What one JetStream consumer per subscription would cost nats-server.

The alternative to webhookd's one consumer with a scheduler in front
(docs/architecture.md, "Delivery under bad receivers"): N durable pull
consumers on the webhooks stream, each with a pull request waiting, as a
fetch loop per subscription would keep. Prints nats-server's RSS, the time
to create them, idle CPU and the CPU of 2,000 publishes spread over them.

    pip install nats-py
    python3 benches/consumer-per-subscription.py 1 100 1000

Loopback only; nats-server from $NATS_SERVER_BIN or PATH, on its own port
and temp store, killed at the end.
"""
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import nats
from nats.js.api import ConsumerConfig, StreamConfig


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def quiet(_error):
    """nats-py reports each refused connect while the server starts."""


async def measure(binary, n):
    store = tempfile.mkdtemp()
    port = free_port()
    server = subprocess.Popen(
        [binary, "-js", "-sd", store, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        nc = None
        for _ in range(50):
            try:
                nc = await nats.connect(
                    f"nats://127.0.0.1:{port}", allow_reconnect=False, error_cb=quiet
                )
                break
            except Exception:
                await asyncio.sleep(0.1)
        if nc is None:
            raise SystemExit("nats-server did not start")
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="WEBHOOKS", subjects=["webhooks.>"]))
        before = rss_mib(server.pid)
        started = time.monotonic()
        for i in range(n):
            await js.add_consumer(
                "WEBHOOKS",
                ConsumerConfig(
                    durable_name=f"s{i}",
                    filter_subject=f"webhooks.s{i}",
                    ack_policy="explicit",
                    max_ack_pending=64,
                ),
            )
        created = time.monotonic() - started
        subs = [await js.pull_subscribe_bind(f"s{i}", "WEBHOOKS") for i in range(n)]
        waiting = [asyncio.create_task(s.fetch(1, timeout=60)) for s in subs]
        await asyncio.sleep(2)
        c0 = cpu_s(server.pid)
        await asyncio.sleep(10)
        idle = (cpu_s(server.pid) - c0) / 10 * 100
        c1 = cpu_s(server.pid)
        for k in range(2000):
            await js.publish(f"webhooks.s{k % n}", b"{}")
        publish_cpu = cpu_s(server.pid) - c1
        print(
            f"{n:>5} consumers: created in {created:.1f} s; nats-server RSS "
            f"{before:.1f} -> {rss_mib(server.pid):.1f} MiB; idle CPU {idle:.1f}% "
            f"with a pull waiting on each; 2,000 publishes: {publish_cpu:.2f} CPU s"
        )
        for t in waiting:
            t.cancel()
        await nc.close()
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(store, ignore_errors=True)


def main():
    binary = os.environ.get("NATS_SERVER_BIN") or shutil.which("nats-server")
    if not binary:
        raise SystemExit("nats-server not found: set NATS_SERVER_BIN")
    for n in [int(a) for a in sys.argv[1:]] or [1, 100, 1000]:
        asyncio.run(measure(binary, n))


if __name__ == "__main__":
    main()
