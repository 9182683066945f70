//! The real binary over real sockets: TLS verified against the generated CA for the Service name,
//! HTTP/1.1 and HTTP/2, certificate rotation, bad input, slow clients and SIGTERM drain.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use testkit::process::ChildGuard;
use testkit::{Client, Protocol, Server, generate_certs, patch_of, review_for, temp_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sample(name: &str) -> Value {
    let path = format!("{}/hack/samples/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutates_over_http1_and_http2_with_a_verified_certificate() {
    let dir = temp_dir("both-protocols");
    generate_certs(&dir);
    let server = Server::start(&dir, &[]);
    let ca = dir.join("ca.crt");
    for (protocol, alpn) in [
        (Protocol::Http1, &b"http/1.1"[..]),
        (Protocol::Http2, &b"h2"[..]),
    ] {
        let mut client = Client::connect(server.addr, &ca, protocol).await.unwrap();
        assert_eq!(client.alpn.as_deref(), Some(alpn));
        // Several reviews on one kept-alive connection.
        for _ in 0..3 {
            let review = sample("pod");
            let reply = client.review("mutate", &review).await;
            assert_eq!(reply["response"]["allowed"], true);
            let mut pod = review["request"]["object"].clone();
            json_patch::patch(&mut pod, &patch_of(&reply)).unwrap();
            assert_eq!(
                pod["metadata"]["annotations"]["inject.istio.io/templates"],
                "sidecar,spire"
            );
            assert_eq!(pod["metadata"]["labels"]["spire-managed-identity"], "true");
            assert_eq!(
                pod["spec"]["volumes"][1],
                json!({"name": "workload-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": true}})
            );
            assert_eq!(
                pod["spec"]["containers"][0]["volumeMounts"][1]["mountPath"],
                "/run/spire/sockets"
            );
            // Re-invocation: the mutated pod needs nothing more.
            let again = client.review("mutate", &review_for(&pod, "CREATE")).await;
            assert!(again["response"].get("patch").is_none(), "{again}");
        }
        let reply = client.review("mutate", &sample("namespace")).await;
        let mut ns = sample("namespace")["request"]["object"].clone();
        json_patch::patch(&mut ns, &patch_of(&reply)).unwrap();
        assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
        let (status, body) = client.request("GET", "/readyz", Vec::new()).await.unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    }
}

/// Many reviews at once on one HTTP/2 connection, each stream in a task of its own and answers
/// written as they are ready: each must still reach its own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reviews_on_one_http2_connection_each_get_their_own_answer() {
    let dir = temp_dir("h2-concurrent");
    generate_certs(&dir);
    let server = Server::start(&dir, &[]);
    let client = Client::connect(server.addr, &dir.join("ca.crt"), Protocol::Http2)
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let mut stream = client.another_stream().expect("an h2 connection");
        let mut review = sample("pod");
        review["request"]["uid"] = json!(format!("00000000-0000-0000-0000-{i:012}"));
        // Every other pod already has labels, so the patches differ in shape (a map added whole
        // or keys added to it) and an answer sent to the wrong stream would not apply.
        let object = &mut review["request"]["object"];
        object["metadata"]["name"] = json!(format!("pod-{i}"));
        object["metadata"]["labels"] = if i % 2 == 0 {
            json!({"app": format!("app-{i}")})
        } else {
            Value::Null
        };
        tasks.spawn(async move {
            let reply = stream.review("mutate", &review).await;
            (review, reply)
        });
    }
    let mut answered = 0;
    while let Some(joined) = tasks.join_next().await {
        let (review, reply) = joined.unwrap();
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch_of(&reply)).unwrap_or_else(|e| {
            panic!(
                "{e}: the patch of {} does not apply to its pod",
                reply["response"]["uid"]
            )
        });
        assert_eq!(pod["metadata"]["labels"]["spire-managed-identity"], "true");
        assert_eq!(
            pod["metadata"]["labels"]["app"],
            review["request"]["object"]["metadata"]["labels"]["app"]
        );
        answered += 1;
    }
    assert_eq!(answered, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_the_server_keeps_serving() {
    let dir = temp_dir("bad-input");
    generate_certs(&dir);
    let server = Server::start(&dir, &[]);
    let ca = dir.join("ca.crt");
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let mut client = Client::connect(server.addr, &ca, protocol).await.unwrap();
        let (status, body) = client
            .request("POST", "/mutate", b"{not json".to_vec())
            .await
            .unwrap();
        assert_eq!(status, 400);
        assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"].is_string());
        let (status, _) = client
            .request(
                "POST",
                "/validate",
                br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(status, 400);
        let (status, _) = client.request("GET", "/mutate", Vec::new()).await.unwrap();
        assert_eq!(status, 405);
        let mut bad_pod = sample("pod");
        bad_pod["request"]["object"]["metadata"]["labels"] = json!("app=checkout");
        let reply = client.review("mutate", &bad_pod).await;
        assert_eq!(reply["response"]["allowed"], false);
        assert_eq!(reply["response"]["status"]["code"], 400);
        assert_eq!(reply["response"]["status"]["reason"], "BadRequest");
        assert!(
            reply["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("metadata.labels")
        );
        // A good review on the same connection still works.
        let reply = client.review("mutate", &sample("pod")).await;
        assert_eq!(reply["response"]["patchType"], "JSONPatch");
    }
    // 9 MiB is over the 8 MiB default: 413 (on a connection of its own, which the server may close).
    let mut client = Client::connect(server.addr, &ca, Protocol::Http2)
        .await
        .unwrap();
    let (status, body) = client
        .request("POST", "/mutate", vec![b' '; 9 * 1024 * 1024])
        .await
        .unwrap();
    assert_eq!(status, 413);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"],
        "request body larger than the limit of 8388608 bytes"
    );
    // The connection is still good for the next review.
    let reply = client.review("mutate", &sample("pod")).await;
    assert_eq!(reply["response"]["patchType"], "JSONPatch");
    let mut client = Client::connect(server.addr, &ca, Protocol::Http1)
        .await
        .unwrap();
    match client
        .request("POST", "/mutate", vec![b' '; 9 * 1024 * 1024])
        .await
    {
        Ok((status, _)) => assert_eq!(status, 413),
        // The server may answer and close before the client finished writing the body, which the
        // client then reports as a write error; what it must never do is answer anything but 413.
        Err(e) => assert!(
            e.contains("connection") || e.contains("closed") || e.contains("reset"),
            "{e}"
        ),
    }
    let mut client = Client::connect(server.addr, &ca, Protocol::Http1)
        .await
        .unwrap();
    client.review("mutate", &sample("namespace")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_while_others_are_served() {
    let dir = temp_dir("slow-client");
    generate_certs(&dir);
    let server = Server::start(&dir, &["--request-timeout", "2s"]);
    let ca = dir.join("ca.crt");

    // Headers complete, body promised but trickled and then stalled.
    let mut tls = raw_http1(&server, &ca).await;
    let started = Instant::now();
    tls.write_all(b"POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"a\":").await.unwrap();
    tls.flush().await.unwrap();

    // Meanwhile another client is served promptly, repeatedly.
    let mut other = Client::connect(server.addr, &ca, Protocol::Http2)
        .await
        .unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        other.review("mutate", &sample("pod")).await;
        // Well before the stalled request's 2 s deadline.
        assert!(t.elapsed() < Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), tls.read_to_end(&mut buf)).await;
    let elapsed = started.elapsed();
    assert!(read.is_ok(), "the stalled connection was not closed");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    // Whatever was said before closing, it was not a 200.
    assert!(!String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));

    // A client trickling a byte at a time is cut off by the total deadline, not an idle timeout.
    let mut tls = raw_http1(&server, &ca).await;
    let started = Instant::now();
    let mut closed = false;
    for byte in b"POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n"
        .iter()
        .chain([b' '; 100].iter())
    {
        if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    if !closed {
        let mut buf = [0u8; 256];
        closed = matches!(
            tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buf)).await,
            Ok(Ok(_)) | Ok(Err(_))
        );
    }
    assert!(closed, "a trickling client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// kube-apiserver gives up after `?timeout=`; a body still stalled then is cut off at that time,
/// not at the server's longer `--request-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiservers_timeout_parameter_shortens_the_deadline() {
    let dir = temp_dir("timeout-parameter");
    generate_certs(&dir);
    let server = Server::start(&dir, &["--request-timeout", "20s"]);
    let ca = dir.join("ca.crt");
    let mut tls = raw_http1(&server, &ca).await;
    let started = Instant::now();
    tls.write_all(b"POST /mutate?timeout=1s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"a\":").await.unwrap();
    tls.flush().await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut reply)).await;
    let elapsed = started.elapsed();
    assert!(read.is_ok(), "still open after 15 s");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_keeps_open_connections_and_survives_a_broken_pair() {
    let dir = temp_dir("rotation");
    generate_certs(&dir);
    let server = Server::start(&dir, &["--cert-reload-interval", "100ms"]);
    let ca = dir.join("ca.crt");
    let mut old = Client::connect(server.addr, &ca, Protocol::Http1)
        .await
        .unwrap();
    old.review("mutate", &sample("pod")).await;

    // Re-issue the leaf with the same CA, as a Secret update would.
    generate_certs(&dir);
    let new_leaf = std::fs::read(dir.join("tls.crt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rotated = loop {
        let probe = Client::connect(server.addr, &ca, Protocol::Http2)
            .await
            .unwrap();
        if probe.peer_certificate != old.peer_certificate {
            break probe;
        }
        assert!(
            Instant::now() < deadline,
            "new handshakes never saw the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pem: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(&new_leaf)
        .collect::<Result<Vec<rustls::pki_types::CertificateDer>, _>>()
        .unwrap();
    assert_eq!(rotated.peer_certificate, pem[0].to_vec());
    // The connection opened before the rotation still works.
    old.review("mutate", &sample("pod")).await;

    // A broken certificate over a good one: the good one keeps serving, the error is counted.
    std::fs::write(
        dir.join("tls.crt"),
        b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    // Polled every 100 ms; waited for (bounded) rather than for a fixed time, on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while testkit::metrics::value(&server.metrics(), "mesh_admission_tls_reload_errors_total") < 1.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = Client::connect(server.addr, &ca, Protocol::Http1)
        .await
        .unwrap();
    assert_eq!(after.peer_certificate, rotated.peer_certificate);
    after.review("mutate", &sample("namespace")).await;
    let metrics = server.metrics();
    assert_eq!(
        testkit::metrics::value(&metrics, "mesh_admission_tls_reloads_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        testkit::metrics::value(&metrics, "mesh_admission_tls_reload_errors_total"),
        1.0,
        "{metrics}"
    );
}

#[test]
fn a_missing_certificate_stops_start_up_with_a_one_line_reason() {
    let dir = temp_dir("missing-cert");
    let out = std::process::Command::new(testkit::mesh_admission())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(dir.join("nope.crt"))
        .arg("--tls-key")
        .arg(dir.join("nope.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("mesh-admission: ") && last.contains("nope.crt"),
        "{stderr}"
    );
    // Unreadable configuration likewise.
    let config = dir.join("config.yaml");
    std::fs::write(&config, "spireTemplates: [x]\n").unwrap();
    let out = std::process::Command::new(testkit::mesh_admission())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spireTemplates"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_certs_are_generated_once_and_never_overwritten() {
    let dir = temp_dir("dev-certs");
    let certs = dir.join("certs");
    {
        let _server = Server::start(&certs, &["--dev-certs"]);
    }
    let first = std::fs::read(certs.join("tls.crt")).unwrap();
    let server = Server::start(&certs, &["--dev-certs"]);
    assert_eq!(std::fs::read(certs.join("tls.crt")).unwrap(), first);
    let mut client = Client::connect(server.addr, &certs.join("ca.crt"), Protocol::Http2)
        .await
        .unwrap();
    client.review("mutate", &sample("namespace")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let dir = temp_dir("sigterm");
    generate_certs(&dir);
    let mut server = Server::start(&dir, &["--shutdown-grace", "500ms"]);
    let ca = dir.join("ca.crt");

    // A request whose body is still arriving when the signal comes.
    let body = sample("pod").to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut tls = raw_http1(&server, &ca).await;
    let header = format!(
        "POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(header.as_bytes()).await.unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        testkit::http::status(&testkit::admin_get(server.admin_addr, "/readyz").unwrap()),
        503,
        "readiness fails at once"
    );
    // During the grace period new connections are still accepted.
    let mut late = Client::connect(server.addr, &ca, Protocol::Http2)
        .await
        .unwrap();
    late.review("mutate", &sample("namespace")).await;

    tls.write_all(tail.as_bytes()).await.unwrap();
    let reply = reply_and_close(tls).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("JSONPatch"));
    // Answered after the signal: the client is told not to reuse the connection.
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert_exits_zero(&mut server);
}

/// A TLS connection speaking HTTP/1.1 by hand, for requests a client library would not send.
async fn raw_http1(
    server: &Server,
    ca: &std::path::Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    testkit::connect(server.addr, ca, &[testkit::HTTP11]).await
}

/// Everything the server sends until it closes the connection.
async fn reply_and_close(
    mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> String {
    tls.flush().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

fn assert_exits_zero(server: &mut Server) {
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits after draining");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_at_the_end_of_the_grace_period_still_gets_its_first_answer() {
    let dir = temp_dir("settle");
    generate_certs(&dir);
    let mut server = Server::start(&dir, &["--shutdown-grace", "400ms"]);
    let ca = dir.join("ca.crt");
    server.signal(Signal::SIGTERM);
    // Connected (TLS done) before the listener closes, first request sent just after it closed.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut tls = raw_http1(&server, &ca).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let body = sample("namespace").to_string();
    let request = format!(
        "POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let reply = reply_and_close(tls).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_exits_zero(&mut server);
}

/// Clients connecting while SIGTERM arrives, as a client pool does when a replica is replaced: one
/// client starts every millisecond, each on a connection of its own (every other one HTTP/2) with
/// one review, and SIGTERM comes 10 ms in, so most connect after it. The grace period accepts their
/// connections and in-flight requests finish (DESIGN.md section 3), so every review is answered, in
/// each of several rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_on_connections_opened_as_sigterm_arrives_are_all_answered() {
    const ROUNDS: usize = 3;
    const CLIENTS: u64 = 40;
    const SIGTERM_AFTER: Duration = Duration::from_millis(10);
    let dir = temp_dir("sigterm-connecting");
    generate_certs(&dir);
    let ca = dir.join("ca.crt");
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let mut server = Server::start(&dir, &["--shutdown-grace", "2s"]);
        let started = tokio::time::Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..CLIENTS {
            let protocol = if i % 2 == 0 {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
            let (addr, ca) = (server.addr, ca.clone());
            let mut review = sample("pod");
            review["request"]["uid"] = json!(format!("00000000-0000-0000-0000-{i:012}"));
            clients.spawn(async move {
                tokio::time::sleep_until(started + Duration::from_millis(i)).await;
                let answer = async {
                    let mut client = Client::connect(addr, &ca, protocol).await?;
                    let body = review.to_string().into_bytes();
                    let (status, body) = client.request("POST", "/mutate?timeout=5s", body).await?;
                    match status {
                        200 => Ok(()),
                        _ => Err(format!("{status}: {}", String::from_utf8_lossy(&body))),
                    }
                };
                let answer = tokio::time::timeout(Duration::from_secs(15), answer).await;
                let answer = answer.unwrap_or_else(|_| Err("no answer within 15 s".into()));
                (i, protocol, answer)
            });
        }
        tokio::time::sleep_until(started + SIGTERM_AFTER).await;
        server.signal(Signal::SIGTERM);
        while let Some(joined) = clients.join_next().await {
            if let (i, protocol, Err(error)) = joined.unwrap() {
                lost.push(format!("round {round}, client {i} ({protocol:?}): {error}"));
            }
        }
        assert_exits_zero(&mut server);
    }
    assert!(
        lost.is_empty(),
        "{} of {} reviews lost over {ROUNDS} rounds:\n{}",
        lost.len(),
        ROUNDS as u64 * CLIENTS,
        lost.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_status_one() {
    let dir = temp_dir("second-signal");
    generate_certs(&dir);
    let mut server = Server::start(&dir, &["--shutdown-grace", "30s"]);
    server.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.exited().is_none(), "still in its grace period");
    server.signal(Signal::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exits at once");
    assert_eq!(status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_denials_and_warnings_reach_the_apiserver_as_it_expects() {
    let dir = temp_dir("validate");
    generate_certs(&dir);
    let server = Server::start(&dir, &[]);
    let mut client = Client::connect(server.addr, &dir.join("ca.crt"), Protocol::Http2)
        .await
        .unwrap();

    let reply = client.review("validate", &sample("helmrelease-good")).await;
    assert_eq!(reply["response"]["allowed"], true, "{reply}");
    assert!(reply["response"].get("warnings").is_none());

    let reply = client.review("validate", &sample("helmrelease-bad")).await;
    let response = &reply["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(response["status"]["reason"], "Invalid");
    let message = response["status"]["message"].as_str().unwrap();
    // Every problem at once, each with its full field path.
    for needle in [
        r#"metadata.annotations[servicemesh.bigbang.dev/port]: must be a port number 1-65535 (value "80a")"#,
        "metadata.annotations[servicemesh.bigbang.dev/host]: must not contain a scheme",
        r#"metadata.annotations[servicemesh.bigbang.dev/mtlsmode]: unknown annotation; did you mean "servicemesh.bigbang.dev/mtlsMode"?"#,
    ] {
        assert!(message.contains(needle), "{needle} not in {message}");
    }

    // A Deployment whose template is wrong is refused at the workload level, with warnings alongside.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"template": {
            "metadata": {"annotations": {
                "servicemesh.bigbang.dev/permissivePorts": "8080, 9090",
                "servicemesh.bigbang.dev/mtlsMode": "STRICT",
            }},
            "spec": {
                "initContainers": [{"name": "sidecar", "env": [{"name": "EDG_INGRESS_PROXY_CONFIG", "value": "web#8080#false##metrics#0#true"}]}],
                "containers": [{"name": "web", "ports": [{"containerPort": 8080}]}],
            },
        }},
    });
    let reply = client
        .review("validate", &review_for(&deployment, "CREATE"))
        .await;
    let response = &reply["response"];
    assert_eq!(response["allowed"], false, "{reply}");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "spec.template.spec.initContainers[0].env[EDG_INGRESS_PROXY_CONFIG]: entry 2"
        ),
        "{message}"
    );
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("9090")), "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("mtlsMode")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .all(|w| w.chars().count() <= 120 && !w.contains('\n'))
    );

    // Fixed, it is admitted; unfamiliar kinds and DELETEs are never denied.
    let mut fixed = deployment.clone();
    fixed["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"] =
        json!("web#8080#false##metrics#7890#true");
    fixed["spec"]["template"]["metadata"]["annotations"] =
        json!({"servicemesh.bigbang.dev/permissivePorts": "8080"});
    let reply = client
        .review("validate", &review_for(&fixed, "UPDATE"))
        .await;
    assert_eq!(reply["response"]["allowed"], true, "{reply}");
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"annotations": {"servicemesh.bigbang.dev/port": "x"}}});
    assert_eq!(
        client
            .review("validate", &review_for(&widget, "CREATE"))
            .await["response"]["allowed"],
        true
    );
    assert_eq!(
        client
            .review("validate", &review_for(&deployment, "DELETE"))
            .await["response"]["allowed"],
        true
    );
}

/// `serve` on ephemeral ports with default (text) logs and the pair in `dir`.
fn serve_with_pair_in(dir: &std::path::Path) -> std::process::Command {
    testkit::server::serve_command(testkit::mesh_admission(), dir)
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::BufRead;
    let dir = temp_dir("text-logs");
    generate_certs(&dir);
    let mut child = ChildGuard(
        serve_with_pair_in(&dir)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let line = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("listening"));
    drop(child);
    let line = line.expect("the server logs where it listens");
    assert!(line.contains(" INFO "), "{line}");
    assert!(!line.contains('\u{1b}'), "{line:?}");
}

/// `serve ... 2>&1 | head -1`: once the reader has gone, log lines are lost but the server keeps
/// serving and still answers SIGTERM (tracing's own error report used to panic on that stderr).
#[test]
fn a_closed_stderr_loses_log_lines_but_not_the_shutdown() {
    use std::io::BufRead;
    let dir = temp_dir("closed-stderr");
    generate_certs(&dir);
    let mut child = ChildGuard(
        serve_with_pair_in(&dir)
            .args(["--shutdown-grace", "0s"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = nix::unistd::Pid::from_raw(child.pid() as i32);
    let stderr = child.0.stderr.take().unwrap();
    let listening = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("listening"));
    // The reader (and with it the pipe's only read end) is gone here.
    assert!(listening, "the server logs where it listens");
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let status = child
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn a_missing_certificate_is_reported_once_with_what_to_do() {
    let dir = temp_dir("missing-cert");
    let out = serve_with_pair_in(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("--dev-certs"), "{stderr}");
    assert!(stderr.contains("mesh-admission certs"), "{stderr}");
}
