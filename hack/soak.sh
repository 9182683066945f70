#!/usr/bin/env bash
# Soak and fault test of `mesh-admission serve` (DESIGN.md section 3), on 127.0.0.1 only.
#
#   SOAK_SECONDS=600 hack/soak.sh       # default 10 minutes of load, plus build and shutdown phases
#
# 1. Builds the release binary and examples/loadgen.rs, generates certificates in a temporary
#    directory and starts the server (cert reload interval 1 s, shutdown grace 2 s).
# 2. Sustained good load for SOAK_SECONDS: HTTP/1.1 keep-alive (25 connections, open-loop
#    SOAK_H1_RATE req/s) and HTTP/2 (SOAK_H2_CONNECTIONS x 8 streams, SOAK_H2_RATE req/s) in
#    parallel, every reply checked as the apiserver would. Pass: zero failed good requests.
# 3. Every SOAK_ROTATE_SECONDS the certificate is re-issued (`certs` into the same directory):
#    mesh_admission_tls_reloads_total must grow by one per rotation and a new handshake
#    (openssl s_client) must present the new leaf.
# 4. In parallel, a bounded bad-request mix over TLS (python3): malformed JSON, JSON that is not an
#    AdmissionReview, an undecodable object, GET /mutate, 9 MiB bodies (with Content-Length and
#    chunked), stalled bodies, stalled and trickled headers. Each outcome must be the contract's.
# 5. Server RSS and open FDs sampled every 10 s. After the warm-up, the median RSS of the last
#    minute must be within +-SOAK_RSS_PCT % of the median of the first minute (single samples spike
#    by up to 8 MiB while a 9 MiB bad request is buffered; every minute's median is printed, and a
#    minute beyond the bound is a WARN), and the median FD count of the last minute within
#    SOAK_FD_TOLERANCE of the first.
# 6. SIGTERM under load: /readyz turns 503, connections are still accepted during the grace period,
#    every request that reached the server gets a valid reply (connect failures after the listener
#    closed are fine), and the process exits 0 within grace + 20 s drain.
# 7. Prints a summary table; exits 1 if any criterion failed (including ERROR lines in the server's
#    log, or a drain report of the TLS listener without `drained: true` and `panicked: 0`).
#
# Environment: SOAK_SECONDS (600), SOAK_H1_RATE (1500), SOAK_H2_RATE (500), SOAK_H2_CONNECTIONS (2),
# SOAK_ROTATE_SECONDS (60), SOAK_WARMUP_SECONDS (60, at most a third of SOAK_SECONDS),
# SOAK_RSS_PCT (10), SOAK_FD_TOLERANCE (10), SOAK_KEEP=1 keeps the work directory,
# CARGO_TARGET_DIR (target).
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECONDS=${SOAK_SECONDS:-600}
H1_RATE=${SOAK_H1_RATE:-1500}
H2_RATE=${SOAK_H2_RATE:-500}
H2_CONNECTIONS=${SOAK_H2_CONNECTIONS:-2}
ROTATE_SECONDS=${SOAK_ROTATE_SECONDS:-60}
WARMUP=${SOAK_WARMUP_SECONDS:-60}
RSS_PCT=${SOAK_RSS_PCT:-10}
FD_TOLERANCE=${SOAK_FD_TOLERANCE:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SERVICE_NAME=mesh-admission.mesh-system.svc
SHUTDOWN_GRACE=2
DRAIN_LIMIT=20
SAMPLE_EVERY=10

for value in "$SOAK_SECONDS" "$ROTATE_SECONDS" "$WARMUP" "$RSS_PCT" "$FD_TOLERANCE" "$H2_CONNECTIONS"; do
    [[ $value =~ ^[0-9]+$ ]] || { echo "soak: not a whole number: $value" >&2; exit 2; }
done
if ((SOAK_SECONDS < 30)); then
    echo "soak: SOAK_SECONDS must be at least 30" >&2
    exit 2
fi
if ((WARMUP * 3 > SOAK_SECONDS)); then
    WARMUP=$((SOAK_SECONDS / 3))
fi

script_start=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mesh-soak.XXXXXX")
CERTS=$WORK/certs
SERVER_PID=""
declare -a CHILDREN=()

cleanup() {
    local status=$?
    local pid
    [[ -n $SERVER_PID ]] && CHILDREN+=("$SERVER_PID")
    for pid in "${CHILDREN[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    if [[ $status -eq 0 && -z ${SOAK_KEEP:-} ]]; then
        rm -rf "$WORK"
    else
        echo "soak: logs and results kept in $WORK" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[soak %4ds] %s\n' "$((SECONDS - script_start))" "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# 1. Build, certificates, server

log "building the release binary and the loadgen example (CARGO_TARGET_DIR=$TARGET_DIR)"
build_start=$SECONDS
CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --locked --bin mesh-admission --example loadgen
build_seconds=$((SECONDS - build_start))
BIN=$TARGET_DIR/release/mesh-admission
LOADGEN=$TARGET_DIR/release/examples/loadgen

"$BIN" certs --out "$CERTS" >"$WORK/certs.log" 2>&1

"$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --tls-cert "$CERTS/tls.crt" --tls-key "$CERTS/tls.key" --log-format json \
    --cert-reload-interval 1s --shutdown-grace "${SHUTDOWN_GRACE}s" \
    >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!

ADDR=""
ADMIN=""
for _ in $(seq 1 200); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "soak: the server exited at start:" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    read -r ADDR ADMIN < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if fields.get("message") == "listening":
        print(fields["addr"], fields["admin_addr"])
        break
else:
    print("", "")
' "$WORK/server.log") || true
    [[ -n $ADDR ]] && break
    sleep 0.1
done
if [[ -z $ADDR ]]; then
    echo "soak: the server did not report its address within 20 s" >&2
    exit 1
fi
log "server pid $SERVER_PID on https://$ADDR, admin http://$ADMIN; work dir $WORK"

metric() {
    # The value of a counter on /metrics, 0 when it cannot be read (which fails the checks using it).
    local value
    value=$(curl -sf --max-time 5 "http://$ADMIN/metrics" | awk -v name="$1" '$1 == name { print $2 }') || true
    echo "${value:-0}"
}

served_fingerprint() {
    openssl s_client -connect "$ADDR" -servername "$SERVICE_NAME" -CAfile "$CERTS/ca.crt" \
        -verify_return_error -verify_hostname "$SERVICE_NAME" </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2
}

file_fingerprint() {
    openssl x509 -in "$CERTS/tls.crt" -noout -fingerprint -sha256 | cut -d= -f2
}

# ---------------------------------------------------------------------------------------------
# 4. The bad-request mix (written here, started with the load)

cat >"$WORK/bad.py" <<'PYTHON'
"""Bad requests over TLS for a bounded time; prints one JSON object of outcomes."""
import json
import select
import socket
import ssl
import sys
import threading
import time

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
ca, server_name, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4])
deadline = time.monotonic() + seconds
context = ssl.create_default_context(cafile=ca)
context.set_alpn_protocols(["http/1.1"])
lock = threading.Lock()
results = {}


def note(kind, outcome, expected, detail=""):
    with lock:
        entry = results.setdefault(kind, {"expected": 0, "unexpected": 0, "outcomes": {}, "samples": []})
        entry["expected" if expected else "unexpected"] += 1
        entry["outcomes"][outcome] = entry["outcomes"].get(outcome, 0) + 1
        if not expected and len(entry["samples"]) < 5:
            entry["samples"].append(f"{outcome}: {detail}"[:300])


def connect(timeout=30):
    raw = socket.create_connection((host, port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname=server_name)


def read_response(sock):
    """Reads one response; returns (status, headers, body) or raises. None status on clean EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            if not data:
                return None, {}, b""
            raise ConnectionError(f"EOF inside the response head: {data[:100]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def request_bytes(method, path, body=b"", extra=""):
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


QUICK = [
    ("malformed_json", "POST", b'{"apiVersion": "admission.k8s.io/v1", "kind": ', 400),
    ("not_admission_review", "POST", b'{"apiVersion": "v1", "kind": "ConfigMap", "data": {}}', 400),
    ("get_mutate", "GET", b"", 405),
]
UNDECODABLE = json.dumps({
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {
        "uid": "bad-object-0001", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "payments", "operation": "CREATE", "userInfo": {"username": "soak"},
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "x", "namespace": "payments", "labels": ["not", "a", "map"]},
                   "spec": {"containers": []}},
    },
}).encode()


def quick_loop():
    """Small bad requests on one keep-alive connection (reconnecting when it closes)."""
    sock = None
    while time.monotonic() < deadline:
        for kind, method, body, want in QUICK + [("undecodable_object", "POST", UNDECODABLE, 200)]:
            try:
                if sock is None:
                    sock = connect()
                sock.sendall(request_bytes(method, "/mutate?timeout=5s", body))
                status, headers, reply = read_response(sock)
                if status is None:
                    note(kind, "closed_without_reply", False, "EOF before any reply")
                    sock.close()
                    sock = None
                    continue
                good = status == want
                detail = reply[:200].decode("utf-8", "replace")
                if good and kind == "undecodable_object":
                    review = json.loads(reply)
                    response = review.get("response", {})
                    good = (response.get("uid") == "bad-object-0001"
                            and response.get("allowed") is False
                            and response.get("status", {}).get("code") == 400
                            and response.get("status", {}).get("reason") == "BadRequest")
                    note(kind, "allowed_false_400" if good else "wrong_review", good, detail)
                elif good and want == 400:
                    try:
                        good = isinstance(json.loads(reply).get("error"), str) and b"\n" not in reply.strip()
                    except ValueError:
                        good = False
                    note(kind, f"status_{status}" + ("" if good else "_bad_body"), good, detail)
                else:
                    note(kind, f"status_{status}", good, detail)
                if headers.get("connection", "").lower() == "close":
                    sock.close()
                    sock = None
            except (OSError, ValueError) as error:
                note(kind, "error", False, repr(error))
                if sock is not None:
                    sock.close()
                sock = None
            time.sleep(0.25)
    if sock is not None:
        sock.close()


def oversize_once(chunked):
    """POSTs a 9 MiB body; the reply must be 413, possibly before the body is fully sent. Reads and
    writes are interleaved on a non-blocking socket, so an early reply is seen at once."""
    kind = "oversize_chunked" if chunked else "oversize_content_length"
    size = 9 * 1024 * 1024
    body = b"[" + b"0," * (size // 2 - 1) + b"0"[: size % 2] + b"]"
    body = body[:size]
    if chunked:
        framing = "Transfer-Encoding: chunked"
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                           for i in range(0, size, 65536)) + b"0\r\n\r\n"
    else:
        framing = f"Content-Length: {size}"
        payload = body
    payload = (f"POST /mutate HTTP/1.1\r\nHost: {server_name}\r\n"
               f"Content-Type: application/json\r\n{framing}\r\n\r\n").encode() + payload
    try:
        sock = connect()
    except OSError as error:
        note(kind, "connect_error", False, repr(error))
        return
    sock.setblocking(False)
    sent, got, closed, send_error = 0, b"", False, None
    start = time.monotonic()
    try:
        while time.monotonic() - start < 30:
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                got += chunk
                if b"\r\n\r\n" in got:
                    head, rest = got.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(rest) >= length:
                        break
                continue
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                closed = True
                break
            if sent < len(payload) and send_error is None:
                try:
                    sent += sock.send(payload[sent:sent + 65536])
                    continue
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    select.select([sock], [sock], [], 0.05)
                except OSError as error:
                    send_error = error
            else:
                select.select([sock], [], [], 0.05)
    finally:
        sock.close()
    elapsed = time.monotonic() - start
    status = int(got[9:12]) if got.startswith(b"HTTP/1.1 ") else None
    detail = (f"{elapsed:.2f} s, sent {sent} of {len(payload)} bytes, closed {closed}, "
              f"send error {send_error!r}, reply {got[:120]!r}")
    note(kind, f"status_{status}" if status else ("closed_without_reply" if closed else "no_reply"),
         status == 413, detail)


def oversize_loop():
    chunked = False
    while time.monotonic() < deadline:
        oversize_once(chunked)
        chunked = not chunked
        time.sleep(2)


def read_until_close(sock, limit):
    """Reads until the server closes (EOF or reset) or `limit` seconds pass; returns (bytes, closed)."""
    got = b""
    sock.settimeout(limit)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got, True
            got += chunk
    except socket.timeout:
        return got, False
    except OSError:
        return got, True


def stall_once(kind):
    """Starts a request and never finishes it; the server must close within ~10 s of the first byte
    (a 408 reply before closing is fine)."""
    try:
        sock = connect(timeout=30)
    except OSError as error:
        note(kind, "connect_error", False, repr(error))
        return
    got, closed = b"", False
    start = time.monotonic()
    try:
        if kind == "stalled_body":
            body = b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {'
            sock.sendall((f"POST /mutate HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\n"
                          "Content-Length: 4096\r\n\r\n").encode() + body)
        elif kind == "stalled_headers":
            sock.sendall(f"POST /mutate HTTP/1.1\r\nHost: {server_name}\r\nContent-Le".encode())
        else:  # trickled headers: one byte every 0.5 s, so the connection is never idle for long
            head = f"POST /mutate HTTP/1.1\r\nHost: {server_name}\r\nX-Padding: {'a' * 200}".encode()
            for i in range(len(head)):
                sock.sendall(head[i:i + 1])
                got, closed = read_until_close(sock, 0.5)
                if got or closed or time.monotonic() - start > 20:
                    break
    except OSError:
        closed = True  # the server closed while we were still sending
    if not closed:
        more, closed = read_until_close(sock, max(1.0, 25 - (time.monotonic() - start)))
        got += more
    elapsed = time.monotonic() - start
    sock.close()
    status = None
    if got.startswith(b"HTTP/1.1 "):
        status = int(got[9:12])
    what = f"closed_after_{status or 'no_reply'}" if closed else "still_open"
    good = closed and 9.0 <= elapsed <= 13.0 and status in (None, 408) and (not got or status == 408)
    note(kind, what if good else f"{what}_at_{elapsed:.0f}s", good,
         f"closed {closed} after {elapsed:.2f} s, reply {got[:80]!r}")
    with lock:
        results[kind].setdefault("close_seconds", []).append(round(elapsed, 2))


def stall_loop(kind):
    while time.monotonic() + 14 < deadline:
        stall_once(kind)
        time.sleep(1)


threads = [threading.Thread(target=quick_loop), threading.Thread(target=oversize_loop)]
threads += [threading.Thread(target=stall_loop, args=(k,)) for k in ("stalled_body", "stalled_headers", "trickled_headers")]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=max(1.0, deadline - time.monotonic()) + 60)
for entry in results.values():
    if "close_seconds" in entry:
        seconds = sorted(entry.pop("close_seconds"))
        entry["close_seconds_min_max"] = [seconds[0], seconds[-1]]
print(json.dumps(results))
PYTHON

# ---------------------------------------------------------------------------------------------
# 2-5. Load, rotations, bad requests and samples for SOAK_SECONDS

BODY=hack/samples/pod.json
run_loadgen() {
    # run_loadgen NAME DURATION ARGS... &: JSON on $WORK/NAME.json, the text report in $WORK/NAME.txt.
    # Always started in the background: `exec` makes $! the loadgen itself, so cleanup can kill it.
    local name=$1 duration=$2
    shift 2
    exec "$LOADGEN" --addr "$ADDR" --ca "$CERTS/ca.crt" --body "$BODY" --path '/mutate?timeout=5s' \
        --duration "$duration" --timeout 10s --json "$@" >"$WORK/$name.json" 2>"$WORK/$name.txt"
}

log "soak: ${SOAK_SECONDS}s of load (h1 25 conns @ ${H1_RATE}/s, h2 ${H2_CONNECTIONS}x8 streams @ ${H2_RATE}/s), bad requests, rotations every ${ROTATE_SECONDS}s"
soak_start=$SECONDS
run_loadgen h1 "${SOAK_SECONDS}s" --protocol h1 --connections 25 --rate "$H1_RATE" &
CHILDREN+=("$!")
H1_PID=$!
run_loadgen h2 "${SOAK_SECONDS}s" --protocol h2 --connections "$H2_CONNECTIONS" --streams 8 --rate "$H2_RATE" &
CHILDREN+=("$!")
H2_PID=$!
python3 "$WORK/bad.py" "$ADDR" "$CERTS/ca.crt" "$SERVICE_NAME" "$SOAK_SECONDS" >"$WORK/bad.json" 2>"$WORK/bad.err" &
CHILDREN+=("$!")
BAD_PID=$!

printf 't\trss_kb\tfds\n' >"$WORK/samples.tsv"
printf 'n\tt\treloads_before\treloads_after\treload_errors\tfile_fp\tserved_fp\tok\n' >"$WORK/rotations.tsv"
reloads_start=$(metric mesh_admission_tls_reloads_total)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0; }
cpu_start=$(cpu_ticks)
rotations=0
next_sample=0
next_rotation=$ROTATE_SECONDS
while true; do
    elapsed=$((SECONDS - soak_start))
    ((elapsed < SOAK_SECONDS)) || break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "the server died during the soak"
        break
    fi
    if ((elapsed >= next_sample)); then
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null) || true
        fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) || true
        [[ -n $rss ]] && printf '%d\t%d\t%d\n' "$elapsed" "$rss" "$fds" >>"$WORK/samples.tsv"
        next_sample=$((next_sample + SAMPLE_EVERY))
    fi
    # A rotation needs a few seconds to be verified, so none starts in the last 10 s.
    if ((elapsed >= next_rotation && elapsed + 10 < SOAK_SECONDS)); then
        rotations=$((rotations + 1))
        before=$(metric mesh_admission_tls_reloads_total)
        "$BIN" certs --out "$CERTS" >>"$WORK/certs.log" 2>&1 || log "certs failed, see $WORK/certs.log"
        want_fp=$(file_fingerprint)
        after=$before
        for _ in $(seq 1 20); do
            sleep 0.5
            after=$(metric mesh_admission_tls_reloads_total)
            ((after > before)) && break
        done
        served_fp=$(served_fingerprint || true)
        errors=$(metric mesh_admission_tls_reload_errors_total)
        ok=no
        [[ $after -eq $((before + 1)) && $served_fp == "$want_fp" ]] && ok=yes
        printf '%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n' "$rotations" "$elapsed" "$before" "$after" "$errors" \
            "$want_fp" "${served_fp:-none}" "$ok" >>"$WORK/rotations.tsv"
        log "rotation $rotations: reloads $before -> $after, new leaf served: $([[ $served_fp == "$want_fp" ]] && echo yes || echo no)"
        next_rotation=$((next_rotation + ROTATE_SECONDS))
    fi
    sleep 1
done
reloads_end=$(metric mesh_admission_tls_reloads_total)
cpu_end=$(cpu_ticks)
reload_errors_end=$(metric mesh_admission_tls_reload_errors_total)

wait_bounded() {
    # wait_bounded PID SECONDS: waits for a child at most SECONDS, then kills it; returns its status.
    local pid=$1 limit=$2 i
    for ((i = 0; i < limit * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running after ${limit}s, killing it"
        kill "$pid" 2>/dev/null || true
    fi
    local status=0
    wait "$pid" || status=$?
    return "$status"
}

log "soak load finished; waiting for the clients"
h1_status=0
wait_bounded "$H1_PID" 40 || h1_status=$?
h2_status=0
wait_bounded "$H2_PID" 40 || h2_status=$?
bad_status=0
wait_bounded "$BAD_PID" 60 || bad_status=$?
cat "$WORK/h1.txt" "$WORK/h2.txt" >&2

# ---------------------------------------------------------------------------------------------
# 6. SIGTERM under load

shutdown_load=20
log "shutdown: load for ${shutdown_load}s, SIGTERM after 5 s"
server_alive_before=no
kill -0 "$SERVER_PID" 2>/dev/null && server_alive_before=yes
ready_before=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$ADMIN/readyz" || true)
run_loadgen term_h1 "${shutdown_load}s" --protocol h1 --connections 25 --rate "$H1_RATE" &
CHILDREN+=("$!")
TERM_H1_PID=$!
run_loadgen term_h2 "${shutdown_load}s" --protocol h2 --connections "$H2_CONNECTIONS" --streams 8 --rate "$H2_RATE" &
CHILDREN+=("$!")
TERM_H2_PID=$!
sleep 5
term_at=$(date +%s.%N)
kill -TERM "$SERVER_PID" 2>/dev/null || true
sleep 0.3
ready_after=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$ADMIN/readyz" || true)
grace_fp=$(served_fingerprint || true)
grace_accept=no
[[ -n $grace_fp ]] && grace_accept=yes
exit_code=none
exit_seconds=none
limit=$((SHUTDOWN_GRACE + DRAIN_LIMIT + 5))
for ((i = 0; i < limit * 20; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
done
if kill -0 "$SERVER_PID" 2>/dev/null; then
    log "the server did not exit within ${limit}s of SIGTERM; killing it"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
else
    code=0
    wait "$SERVER_PID" || code=$?
    exit_code=$code
    exit_seconds=$(python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.2f}")' "$term_at")
fi
SERVER_PID=""
term_h1_status=0
wait_bounded "$TERM_H1_PID" 60 || term_h1_status=$?
term_h2_status=0
wait_bounded "$TERM_H2_PID" 60 || term_h2_status=$?
cat "$WORK/term_h1.txt" "$WORK/term_h2.txt" >&2
grep -E '"(shutting down|stopped|server stopped|listener closed, draining connections)' "$WORK/server.log" >&2 || true

# ---------------------------------------------------------------------------------------------
# 7. Summary and verdict

total_seconds=$((SECONDS - script_start))
clk_tck=$(getconf CLK_TCK)
export S_WORK=$WORK S_SOAK_SECONDS=$SOAK_SECONDS S_WARMUP=$WARMUP S_BUILD_SECONDS=$build_seconds \
    S_TOTAL_SECONDS=$total_seconds S_SERVER_ALIVE=$server_alive_before S_H1_RATE=$H1_RATE \
    S_H2_RATE=$H2_RATE S_H1_STATUS=$h1_status S_H2_STATUS=$h2_status S_TERM_H1_STATUS=$term_h1_status \
    S_TERM_H2_STATUS=$term_h2_status S_BAD_STATUS=$bad_status S_RELOADS_START=$reloads_start \
    S_RELOADS_END=$reloads_end S_RELOAD_ERRORS=$reload_errors_end S_RSS_PCT=$RSS_PCT \
    S_FD_TOLERANCE=$FD_TOLERANCE S_SAMPLE_EVERY=$SAMPLE_EVERY S_READY_BEFORE=$ready_before \
    S_READY_AFTER=$ready_after S_GRACE_ACCEPT=$grace_accept S_ADDR=$ADDR \
    S_CPU_TICKS=$((cpu_end - cpu_start)) S_CLK_TCK=$clk_tck \
    S_EXIT_CODE=$exit_code S_EXIT_SECONDS=$exit_seconds S_GRACE=$SHUTDOWN_GRACE S_DRAIN=$DRAIN_LIMIT
python3 - <<'PYTHON'
import json, os, statistics, sys

env = os.environ
work = env["S_WORK"]
failures = []
rows = []


def load(name):
    try:
        with open(f"{work}/{name}") as f:
            return json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None


def check(ok, what):
    if not ok:
        failures.append(what)
    return "ok" if ok else "FAIL"


def row(name, value, verdict=""):
    rows.append((name, str(value), verdict))


soak_seconds, warmup = int(env["S_SOAK_SECONDS"]), int(env["S_WARMUP"])
row("duration", f"soak {soak_seconds} s (warm-up {warmup} s); build {env['S_BUILD_SECONDS']} s; "
    f"script total {env['S_TOTAL_SECONDS']} s")
row("server alive after soak", env["S_SERVER_ALIVE"],
    check(env["S_SERVER_ALIVE"] == "yes", "the server died during the soak"))
cpu = int(env["S_CPU_TICKS"]) / int(env["S_CLK_TCK"])
row("server CPU during soak", f"{cpu:.0f} s = {cpu * 100 / soak_seconds:.0f}% of one core (2-core host shared with the load)")

# 2. Good load.
statuses = {k: int(env[f"S_{k.upper()}_STATUS"]) for k in ("h1", "h2", "term_h1", "term_h2")}
for name in ("h1", "h2"):
    rate = float(env[f"S_{name.upper()}_RATE"])
    r = load(f"{name}.json")
    if r is None:
        row(f"good {name}", "no report",
            check(False, f"loadgen {name} produced no report (exit {statuses[name]})"))
        continue
    ok = r["failed"] == 0 and r["not_reached"] == 0 and statuses[name] == 0 and r["ok"] > 0
    row(f"good {name} requests",
        f"ok {r['ok']}  failed {r['failed']} {r['failures'] or ''}  "
        f"not reached {r['not_reached']} {r['not_reached_reasons'] or ''}",
        check(ok, f"good {name}: {r['failed']} failed {r['failures']}, {r['not_reached']} not reached "
                  f"{r['not_reached_reasons']}; samples {r['error_samples']}"))
    achieved = r["throughput"]
    row(f"good {name} rate",
        f"{achieved:.1f}/s achieved of {rate:g}/s; overdue unsent {r['overdue_unsent']}; "
        f"connections opened {r['connections_opened']}",
        "" if achieved >= 0.95 * rate else "WARN")
    lat, svc = r["latency_ms"], r["service_ms"]
    row(f"good {name} latency (ms)",
        f"p50 {lat['p50']}  p99 {lat['p99']}  p99.9 {lat['p999']}  max {lat['max']}  "
        f"(service time p50 {svc['p50']}  p99 {svc['p99']})")

# 3. Rotations.
rotations = []
with open(f"{work}/rotations.tsv") as f:
    next(f)
    for line in f:
        rotations.append(line.rstrip("\n").split("\t")[-1] == "yes")
done = len(rotations)
grown = int(env["S_RELOADS_END"]) - int(env["S_RELOADS_START"])
row("cert rotations",
    f"done {done}; tls_reloads_total +{grown}; new leaf on new handshake {sum(rotations)}/{done}; "
    f"reload errors {env['S_RELOAD_ERRORS']}",
    check(done > 0 and grown == done and all(rotations),
          f"rotations: done {done}, tls_reloads_total grew by {grown}, verified {sum(rotations)}"))

# 4. Bad requests.
bad = load("bad.json")
if not bad:
    row("bad requests", "no report",
        check(False, f"the bad-request client produced no report (exit {env['S_BAD_STATUS']})"))
else:
    kinds = ("malformed_json", "not_admission_review", "undecodable_object", "get_mutate",
             "oversize_content_length", "oversize_chunked", "stalled_body", "stalled_headers",
             "trickled_headers")
    for kind in kinds:
        entry = bad.get(kind)
        if entry is None:
            row(f"bad {kind}", "none sent", check(False, f"bad {kind}: none sent"))
            continue
        extra = ""
        if "close_seconds_min_max" in entry:
            low, high = entry["close_seconds_min_max"]
            extra = f"  closed after {low}-{high} s"
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(entry["outcomes"].items()))
        row(f"bad {kind}", f"expected {entry['expected']}  unexpected {entry['unexpected']}  "
            f"[{outcomes}]{extra}",
            check(entry["unexpected"] == 0 and entry["expected"] > 0,
                  f"bad {kind}: {entry['unexpected']} unexpected outcomes {entry['outcomes']}: "
                  f"{entry['samples']}"))

# 5. RSS and FDs.
samples = []
with open(f"{work}/samples.tsv") as f:
    next(f)
    for line in f:
        samples.append(tuple(map(int, line.split())))
post = [s for s in samples if s[0] >= warmup]
if len(post) < 2:
    row("RSS / FDs", "too few samples", check(False, "too few RSS/FD samples after the warm-up"))
else:
    def mib(kb):
        return f"{kb / 1024:.1f}"
    # The criterion is the trend: the median of the last minute against the median of the first
    # minute after the warm-up. Single samples are too noisy for a +-10% bound on a ~11 MiB process:
    # each 9 MiB bad request makes the server buffer up to its 8 MiB limit for a moment, and the
    # allocator may hold on to freed memory for a while. Minutes that stray further are shown as a
    # WARN row with every minute's median, so an excursion stays visible without failing the run.
    limit = float(env["S_RSS_PCT"])
    windows = {}
    for t, kb, _ in post:
        windows.setdefault((t - post[0][0]) // 60, []).append(kb)
    groups = [v for _, v in sorted(windows.items())]
    if len(groups) > 1 and len(groups[-1]) < 3:  # a short last minute joins the one before
        last = groups.pop()
        groups[-1] += last
    medians = [statistics.median(v) for v in groups]
    base = medians[0]
    rss = [s[1] for s in post]
    change = (medians[-1] - base) * 100.0 / base
    row("RSS (MiB)",
        f"first {mib(samples[0][1])}  after warm-up {mib(base)}  end {mib(medians[-1])}  "
        f"min {mib(min(rss))}  max {mib(max(rss))}  change {change:+.1f}% "
        f"(warm-up/end: 1-min medians; min/max: single samples)",
        check(abs(change) <= limit, f"RSS: the last minute's median {mib(medians[-1])} MiB is "
                                    f"{change:+.1f}% from the post-warm-up {mib(base)} MiB (limit {limit:g}%)"))
    worst = max(abs(m - base) for m in medians) * 100.0 / base
    row("RSS 1-min medians (MiB)", " ".join(mib(m) for m in medians) + f"  (largest {worst:.1f}% off)",
        "" if worst <= limit else "WARN")
    fds = [s[2] for s in post]
    first = [s[2] for s in post if s[0] < post[0][0] + 60]
    last = [s[2] for s in post if s[0] > post[-1][0] - 60]
    m1, m2 = statistics.median(first), statistics.median(last)
    tolerance = int(env["S_FD_TOLERANCE"])
    row("open FDs",
        f"first {samples[0][2]}  after warm-up {post[0][2]}  last {post[-1][2]}  min {min(fds)}  "
        f"max {max(fds)}  median first/last minute {m1:g}/{m2:g}",
        check(abs(m2 - m1) <= tolerance,
              f"open FDs: median {m1:g} in the first minute after warm-up, {m2:g} in the last "
              f"(tolerance {tolerance})"))
row("samples", f"{len(samples)}, every {env['S_SAMPLE_EVERY']} s")

# 6. Shutdown.
before, after = env["S_READY_BEFORE"], env["S_READY_AFTER"]
row("readyz before / after SIGTERM", f"{before} / {after}",
    check(before == "200" and after == "503", f"/readyz before/after SIGTERM: {before}/{after}"))
row("TLS accepted during grace", env["S_GRACE_ACCEPT"],
    check(env["S_GRACE_ACCEPT"] == "yes", "no TLS handshake during the shutdown grace period"))
code, seconds = env["S_EXIT_CODE"], env["S_EXIT_SECONDS"]
limit = int(env["S_GRACE"]) + int(env["S_DRAIN"])
in_time = seconds != "none" and float(seconds) <= limit + 1
row("server exit after SIGTERM", f"code {code} after {seconds} s (limit {limit} s: grace + drain)",
    check(code == "0" and in_time, f"server exit after SIGTERM: code {code} after {seconds} s"))
for name in ("term_h1", "term_h2"):
    r = load(f"{name}.json")
    if r is None:
        row(f"shutdown {name[5:]}", "no report",
            check(False, f"loadgen {name} produced no report (exit {statuses[name]})"))
        continue
    row(f"shutdown {name[5:]} requests",
        f"ok {r['ok']}  failed {r['failed']} {r['failures'] or ''}  not reached {r['not_reached']} "
        f"{r['not_reached_reasons'] or ''}  retried unsent {r['retried_unsent']}",
        check(r["failed"] == 0 and r["ok"] > 0 and statuses[name] == 0,
              f"shutdown {name[5:]}: {r['failed']} requests reached the server without a valid reply: "
              f"{r['failures']}; samples {r['error_samples']}"))

# The server's own account: log levels and the TLS listener's final report.
levels, stopped = {}, "none"
with open(f"{work}/server.log") as f:
    for line in f:
        try:
            entry = json.loads(line)
        except ValueError:
            levels["unparsable"] = levels.get("unparsable", 0) + 1
            continue
        levels[entry.get("level", "?")] = levels.get(entry.get("level", "?"), 0) + 1
        fields = entry.get("fields", {})
        if fields.get("message") == "server stopped" and fields.get("local") == env["S_ADDR"]:
            stopped = fields.get("report", "?")
row("server log lines", " ".join(f"{k}={v}" for k, v in sorted(levels.items())),
    check(levels.get("ERROR", 0) == 0 and "unparsable" not in levels,
          f"the server logged {levels.get('ERROR', 0)} ERROR lines (see server.log)"))
row("server drain report", stopped,
    check("panicked: 0" in stopped and "drained: true" in stopped, f"server drain report: {stopped}"))

width = max(len(r[0]) for r in rows)
print()
print("=" * 100)
print("mesh-admission soak summary")
print("=" * 100)
for name, value, verdict in rows:
    print(f"{name:<{width}}  {verdict:<4}  {value}")
print("-" * 100)
if failures:
    print("RESULT: FAIL")
    for failure in failures:
        print(f"  - {failure}")
    sys.exit(1)
print("RESULT: PASS")
PYTHON
