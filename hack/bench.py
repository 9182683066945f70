#!/usr/bin/env python3
"""Runs the measurements of hack/bench.sh (read its header) and prints the comparison table."""

import json
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

SECONDS = min(int(os.environ.get("BENCH_SECONDS", "10")), 20)
# Rounds of the whole comparison; the table shows each figure's median. This VM's throughput drifts by
# 10% from minute to minute, so a single round can move a ratio by 0.05.
ROUNDS = max(1, min(int(os.environ.get("BENCH_ROUNDS", "1")), 5))
SERVER_CPU = os.environ.get("SERVER_CPU", "0")
LOAD_CPU = os.environ.get("LOAD_CPU", "1")
# The review every load run sends: the 4.8 KB Pod by default; hack/samples/pod-small.json (2.7 KB, one
# container) is the size the arithmetic assumed.
BODY = os.environ.get("BENCH_BODY", "hack/samples/pod-4k.json")
# Another mesh-admission build to compare with in place of the null webhook (e.g. the code before a
# change); the table's second column is then that build.
BASELINE_BIN = os.environ.get("BENCH_BASELINE_BIN")
# The mesh-admission build measured (this checkout's release build unless named).
MESH_BIN = os.environ.get("BENCH_BIN", "target/release/mesh-admission")
PORT, ADMIN_PORT = 18643, 18690
RELEASE = "target/release"


def run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(proc, ca, deadline_s=10.0):
    """Seconds from spawn to the first /readyz 200 on the TLS port, polled every millisecond."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=1) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                    if tls.recv(64).startswith(b"HTTP/1.1 200"):
                        return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.001)
    raise RuntimeError("server never became ready")


def cpu_seconds(pid):
    """User plus system CPU time of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def h2load(args, requests=None, server=None):
    """One h2load run. For a timed run, also the share of a core the server used in its middle part
    (after the warm-up, before the end): below 100% means the server was not the bottleneck."""
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", *args, "-d", BODY, "-H", "content-type: application/json"]
    cmd += ["-n", str(requests)] if requests else ["-D", str(SECONDS), "--warm-up-time=1"]
    cmd.append(f"https://127.0.0.1:{PORT}/mutate?timeout=5s")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    busy = float("nan")
    if server is not None and not requests and SECONDS >= 3:
        time.sleep(1.5)
        cpu0, wall0 = cpu_seconds(server), time.monotonic()
        time.sleep(SECONDS - 1.5)
        busy = (cpu_seconds(server) - cpu0) / (time.monotonic() - wall0)
    out = proc.communicate(timeout=SECONDS + 30)[0]
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if not (rate and done and codes):
        raise RuntimeError(f"cannot read h2load output:\n{out}")
    return {
        "rps": float(rate.group(1)),
        "busy": busy,
        "succeeded": int(done.group(2)),
        "failed": int(done.group(3)),
        "non2xx": int(done.group(2)) - int(codes.group(1)),
    }


def loadgen(ca, rate):
    cmd = [
        "taskset",
        "-c",
        LOAD_CPU,
        f"{RELEASE}/examples/loadgen",
        "--addr",
        f"127.0.0.1:{PORT}",
        "--ca",
        ca,
        "--body",
        BODY,
        "--path",
        "/mutate",
        "--protocol",
        "h1",
        "--connections",
        "25",
        "--rate",
        str(rate),
        "--duration",
        f"{SECONDS}s",
        "--json",
    ]
    out = run(cmd, timeout=SECONDS + 30)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen printed no JSON:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def measure(name, command, ca):
    print(f"== {name}", flush=True)
    # mimalloc's purge setting as the image and the chart give it (src/main.rs says why).
    env = {**os.environ, "MIMALLOC_PURGE_DELAY": "0"}
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        r = {"startup_ms": wait_ready(proc, ca) * 1000}
        time.sleep(1)
        r["rss_idle"] = rss_mib(proc.pid)
        warm = h2load(["--h1", "-c", "25"], requests=100_000)
        r["rss_100k"] = rss_mib(proc.pid)
        r["h1"] = h2load(["--h1", "-c", "25"], server=proc.pid)
        r["h2"] = h2load(["-c", "8", "-m", "8"], server=proc.pid)
        # As kube-apiserver sends webhook calls: one HTTP/2 connection, many streams in flight.
        r["h2_1"] = h2load(["-c", "1", "-m", "16"], server=proc.pid)
        r["latency"] = loadgen(ca, 1000)
        r["rss_end"] = rss_mib(proc.pid)
        r["failed"] = (
            warm["failed"]
            + r["h1"]["failed"]
            + r["h2"]["failed"]
            + r["h2_1"]["failed"]
            + warm["non2xx"]
            + r["h1"]["non2xx"]
            + r["h2"]["non2xx"]
            + r["h2_1"]["non2xx"]
        )
        return r
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            proc.kill()


def latency(r, q):
    """Latency quantile in microseconds (loadgen reports milliseconds, measured from the scheduled send)."""
    return float(r["latency"]["latency_ms"][q]) * 1000


def median_of(results):
    """Each figure's median over the rounds (the figures of a result are nested dicts of numbers)."""
    if isinstance(results[0], dict):
        return {k: median_of([r[k] for r in results]) for k in results[0]}
    if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in results):
        return statistics.median(results)
    return results[0]


def cpu_us(run):
    """Server CPU microseconds per request: comparable even when a server did not saturate its core."""
    return run["busy"] * 1e6 / run["rps"] if run["rps"] else float("nan")


def main():
    work = tempfile.mkdtemp(prefix="mesh-bench-")
    certs = os.path.join(work, "certs")
    run([f"{RELEASE}/mesh-admission", "certs", "--out", certs], timeout=30)
    ca, crt, key = (os.path.join(certs, f) for f in ("ca.crt", "tls.crt", "tls.key"))

    def serve_cmd(binary):
        return [
            binary,
            "serve",
            "--listen",
            f"127.0.0.1:{PORT}",
            "--admin-listen",
            f"127.0.0.1:{ADMIN_PORT}",
            "--tls-cert",
            crt,
            "--tls-key",
            key,
            "--log-level",
            "warn",
            "--shutdown-grace",
            "0s",
        ]

    mesh_cmd = serve_cmd(MESH_BIN)
    null_cmd = [
        f"{RELEASE}/examples/null_webhook",
        "--listen",
        f"127.0.0.1:{PORT}",
        "--tls-cert",
        crt,
        "--tls-key",
        key,
    ]
    other = "null webhook"
    if BASELINE_BIN:
        null_cmd, other = serve_cmd(BASELINE_BIN), "baseline"
    # Alternating rounds, so a slow spell of a shared machine does not fall on one server only.
    meshes, nulls = [], []
    for i in range(ROUNDS):
        suffix = f" (round {i + 1} of {ROUNDS})" if ROUNDS > 1 else ""
        meshes.append(measure("mesh-admission" + suffix, mesh_cmd, ca))
        nulls.append(measure(other + suffix, null_cmd, ca))
    mesh, null = median_of(meshes), median_of(nulls)
    rows = [
        ("HTTP/1.1 keep-alive, 25 conns (req/s)", mesh["h1"]["rps"], null["h1"]["rps"]),
        ("  server CPU busy (% of its core)", 100 * mesh["h1"]["busy"], 100 * null["h1"]["busy"]),
        ("  server CPU per request (us)", cpu_us(mesh["h1"]), cpu_us(null["h1"])),
        ("HTTP/2, 8 conns x 8 streams (req/s)", mesh["h2"]["rps"], null["h2"]["rps"]),
        ("  server CPU busy (% of its core)", 100 * mesh["h2"]["busy"], 100 * null["h2"]["busy"]),
        ("  server CPU per request (us)", cpu_us(mesh["h2"]), cpu_us(null["h2"])),
        ("HTTP/2, 1 conn x 16 streams (req/s)", mesh["h2_1"]["rps"], null["h2_1"]["rps"]),
        ("  server CPU busy (% of its core)", 100 * mesh["h2_1"]["busy"], 100 * null["h2_1"]["busy"]),
        ("  server CPU per request (us)", cpu_us(mesh["h2_1"]), cpu_us(null["h2_1"])),
        ("p50 at 1,000 req/s (us)", latency(mesh, "p50"), latency(null, "p50")),
        ("p99 at 1,000 req/s (us)", latency(mesh, "p99"), latency(null, "p99")),
        ("p99.9 at 1,000 req/s (us)", latency(mesh, "p999"), latency(null, "p999")),
        ("RSS idle (MiB)", mesh["rss_idle"], null["rss_idle"]),
        ("RSS after 100,000 requests (MiB)", mesh["rss_100k"], null["rss_100k"]),
        ("start to /readyz 200 (ms)", mesh["startup_ms"], null["startup_ms"]),
    ]
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), server on CPU {SERVER_CPU}, "
        f"load on CPU {LOAD_CPU}, {SECONDS} s per run, "
        f"median of {ROUNDS} round(s), body {os.path.getsize(BODY)} bytes"
    )
    print(f"| {'measure':40} | {'mesh-admission':>14} | {other:>12} | {'ratio':>6} |")
    print(f"|{'-' * 42}|{'-' * 15}:|{'-' * 13}:|{'-' * 7}:|")
    for label, m, n in rows:
        print(f"| {label:40} | {m:14,.1f} | {n:12,.1f} | {m / n if n else float('nan'):6.2f} |")
    failed = sum(r["failed"] + r["latency"].get("failed", 0) for r in meshes + nulls)
    if ROUNDS > 1:
        for proto in ("h1", "h2", "h2_1"):
            ratios = ", ".join(f"{m[proto]['rps'] / n[proto]['rps']:.2f}" for m, n in zip(meshes, nulls, strict=True))
            print(f"{proto} throughput ratio per round: {ratios}")
    print(f"\nfailed or non-2xx requests: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
