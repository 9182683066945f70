//! The webhook port's contract (DESIGN.md section 3), exercised over real sockets on 127.0.0.1.

use std::fs;
use std::time::{Duration, Instant};

use hyper::{Request, Version};
use mesh_admission::server::listener::{ServeOptions, serve};
use mesh_admission::server::tls::ReloadEvent;
use testkit::certs::{SecretVolume, client_identity};
use testkit::listener::{TestServer, app, fast_options};
use testkit::{
    Client, H2, HTTP11, SERVICE_NAME, Sender, client_config, connect, file_leaf, generate_certs,
    peer_leaf, temp_dir, tls_connect,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn alpn_selects_http2_or_http11_and_both_serve() {
    let dir = temp_dir("alpn");
    let certs = generate_certs(&dir);
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, fast_options()).await;

    struct Case {
        offered: &'static [&'static [u8]],
        negotiated: Option<&'static [u8]>,
        version: Version,
    }
    let cases = [
        Case {
            offered: &[H2, HTTP11],
            negotiated: Some(H2),
            version: Version::HTTP_2,
        },
        Case {
            offered: &[H2],
            negotiated: Some(H2),
            version: Version::HTTP_2,
        },
        Case {
            offered: &[HTTP11],
            negotiated: Some(HTTP11),
            version: Version::HTTP_11,
        },
        // Without ALPN, HTTP/1.1 is the only protocol a TLS server may assume.
        Case {
            offered: &[],
            negotiated: None,
            version: Version::HTTP_11,
        },
    ];
    for case in cases {
        let stream = connect(server.addr, &certs.ca_cert, case.offered).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), case.negotiated);
        let mut client = Client::handshake(stream).await;
        for _ in 0..3 {
            let (status, got, body) = client.get("/hello").await.expect("request");
            assert_eq!((status, got, body.as_str()), (200, case.version, "hello"));
        }
    }
    server.shutdown.cancel();
    server.handle.await.expect("server task");
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_rotated_secret_serves_new_handshakes_and_keeps_open_connections() {
    let dir = temp_dir("rotate");
    let generated = generate_certs(&dir.join("gen"));
    let volume = SecretVolume::new(dir.join("volume"), &dir.join("gen"));
    let server = TestServer::start(&volume.cert(), &volume.key(), None, fast_options()).await;

    let old_stream = connect(server.addr, &generated.ca_cert, &[HTTP11]).await;
    let old_leaf = peer_leaf(&old_stream);
    assert_eq!(old_leaf, file_leaf(&generated.tls_cert));
    let mut old_client = Client::handshake(old_stream).await;
    assert_eq!(old_client.get("/hello").await.unwrap().0, 200);

    generate_certs(&dir.join("gen")); // same CA, new leaf
    let new_leaf = file_leaf(&generated.tls_cert);
    assert_ne!(new_leaf, old_leaf);
    volume.update(&dir.join("gen"));
    assert_eq!(server.wait_for_events(1).await, vec![ReloadEvent::Reloaded]);

    let new_stream = connect(server.addr, &generated.ca_cert, &[H2]).await;
    assert_eq!(peer_leaf(&new_stream), new_leaf);
    let mut new_client = Client::handshake(new_stream).await;
    assert_eq!(new_client.get("/hello").await.unwrap().0, 200);
    // The connection opened before the rotation still works on its original certificate.
    assert_eq!(old_client.get("/hello").await.unwrap().0, 200);

    // A broken certificate is reported once and the good pair keeps serving.
    volume.write_cert("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
    let events = server.wait_for_events(2).await;
    assert!(
        matches!(&events[1], ReloadEvent::Failed(reason) if reason.contains("tls.crt")),
        "{events:?}"
    );
    let stream = connect(server.addr, &generated.ca_cert, &[HTTP11]).await;
    assert_eq!(peer_leaf(&stream), new_leaf);
    assert_eq!(
        Client::handshake(stream)
            .await
            .get("/hello")
            .await
            .unwrap()
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.events.lock().unwrap().len(),
        2,
        "not re-reported every tick"
    );

    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_key_that_does_not_match_is_refused_at_runtime() {
    let dir = temp_dir("mismatch");
    let a = generate_certs(&dir.join("a"));
    let b = generate_certs(&dir.join("b"));
    let live = dir.join("live");
    fs::create_dir_all(&live).unwrap();
    fs::copy(&a.tls_cert, live.join("tls.crt")).unwrap();
    fs::copy(&a.tls_key, live.join("tls.key")).unwrap();
    let server = TestServer::start(
        &live.join("tls.crt"),
        &live.join("tls.key"),
        None,
        fast_options(),
    )
    .await;

    // Written over the good key with a rename, the way an atomic writer would.
    fs::copy(&b.tls_key, live.join(".tls.key.new")).unwrap();
    fs::rename(live.join(".tls.key.new"), live.join("tls.key")).unwrap();
    let events = server.wait_for_events(1).await;
    assert!(
        matches!(&events[0], ReloadEvent::Failed(reason) if reason.contains("does not match")),
        "{events:?}"
    );
    let stream = connect(server.addr, &a.ca_cert, &[HTTP11]).await;
    assert_eq!(peer_leaf(&stream), file_leaf(&a.tls_cert));

    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn client_ca_requires_a_client_certificate_signed_by_it() {
    let dir = temp_dir("mtls");
    let certs = generate_certs(&dir);
    let other = generate_certs(&dir.join("other"));
    let server = TestServer::start(
        &certs.tls_cert,
        &certs.tls_key,
        Some(&certs.ca_cert),
        fast_options(),
    )
    .await;

    // TLS 1.3 finishes the client's side of the handshake before the server checks the client
    // certificate, so the refusal can surface on the first request instead of on connect.
    let anonymous = client_config(&certs.ca_cert, &[HTTP11], None);
    let refused = match tls_connect(server.addr, anonymous).await {
        Err(_) => true,
        Ok(stream) => Client::handshake(stream).await.get("/hello").await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");

    let stranger = client_config(
        &certs.ca_cert,
        &[HTTP11],
        Some(client_identity(&dir.join("other"), "kube-apiserver")),
    );
    let refused = match tls_connect(server.addr, stranger).await {
        Err(_) => true,
        Ok(stream) => Client::handshake(stream).await.get("/hello").await.is_err(),
    };
    assert!(refused, "a client certificate from another CA was accepted");
    drop(other);

    for alpn in [H2, HTTP11] {
        let trusted = client_config(
            &certs.ca_cert,
            &[alpn],
            Some(client_identity(&dir, "kube-apiserver")),
        );
        let stream = tls_connect(server.addr, trusted)
            .await
            .expect("mTLS connect");
        let (status, _, body) = Client::handshake(stream).await.get("/hello").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "hello"));
    }

    server.shutdown.cancel();
    let report = server.handle.await.unwrap();
    assert!(report.handshake_failures >= 1, "{report:?}");
    fs::remove_dir_all(dir).ok();
}

/// Reads until EOF (bounded), returning what was read and when the connection ended.
async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (String, Instant) {
    let mut received = Vec::new();
    let result = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    assert!(result.is_ok(), "connection still open after {limit:?}");
    (
        String::from_utf8_lossy(&received).into_owned(),
        Instant::now(),
    )
}

#[tokio::test]
async fn a_trickled_body_is_cut_off_at_the_deadline_while_others_are_served() {
    let dir = temp_dir("slow-body");
    let certs = generate_certs(&dir);
    let opts = fast_options(); // request_deadline: 1 s
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, opts).await;

    let mut slow = connect(server.addr, &certs.ca_cert, &[HTTP11]).await;
    let started = Instant::now();
    slow.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(slow);
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"x").await.is_err() || writer.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // Meanwhile another client is served promptly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut other = Client::handshake(connect(server.addr, &certs.ca_cert, &[HTTP11]).await).await;
    let served = Instant::now();
    assert_eq!(other.get("/hello").await.unwrap().0, 200);
    // Held behind the trickling client it would wait for its cut-off, about 700 ms from here.
    assert!(served.elapsed() < Duration::from_millis(650));

    let (response, closed) = read_to_close(&mut reader, Duration::from_secs(5)).await;
    let took = closed - started;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    trickle.abort();

    // The other keep-alive connection is unaffected.
    assert_eq!(other.get("/hello").await.unwrap().0, 200);
    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn trickled_headers_are_cut_off_at_the_deadline() {
    let dir = temp_dir("slow-head");
    let certs = generate_certs(&dir);
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, fast_options()).await;

    let slow = connect(server.addr, &certs.ca_cert, &[HTTP11]).await;
    let started = Instant::now();
    let (mut reader, mut writer) = tokio::io::split(slow);
    let trickle = tokio::spawn(async move {
        writer.write_all(b"GET /hello HTTP/1.1\r\n").await.ok();
        for _ in 0..100 {
            if writer.write_all(b"x-a: b\r\n").await.is_err() || writer.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (response, closed) = read_to_close(&mut reader, Duration::from_secs(5)).await;
    let took = closed - started;
    assert!(!response.contains("200 OK"), "{response:?}");
    // The trickle alone would last 10 s.
    assert!(took < Duration::from_secs(4), "{took:?}");
    trickle.abort();
    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_http2_stream_past_its_deadline_fails_alone() {
    let dir = temp_dir("slow-h2");
    let certs = generate_certs(&dir);
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, fast_options()).await;
    let mut client = Client::handshake(connect(server.addr, &certs.ca_cert, &[H2]).await).await;

    let (mut sender, body) =
        http_body_util::channel::Channel::<_, std::convert::Infallible>::new(1);
    let request = Request::post(format!("https://{SERVICE_NAME}/echo"))
        .body(http_body_util::BodyExt::boxed(body))
        .unwrap();
    let started = Instant::now();
    let Sender::H2(send) = &mut client.sender else {
        panic!("expected h2")
    };
    let mut slow_send = send.clone();
    let slow = tokio::spawn(async move { slow_send.send_request(request).await });
    sender
        .send_data(axum::body::Bytes::from_static(b"{"))
        .await
        .unwrap();

    assert_eq!(
        client.get("/hello").await.unwrap().0,
        200,
        "other streams are served"
    );
    let response = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("stream answered")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        client.get("/hello").await.unwrap().0,
        200,
        "connection still usable"
    );
    drop(sender);

    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_early_http2_answer_lets_the_client_finish_its_body() {
    let dir = temp_dir("early-h2");
    let certs = generate_certs(&dir);
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, fast_options()).await;
    let mut client = Client::handshake(connect(server.addr, &certs.ca_cert, &[H2]).await).await;
    let Sender::H2(send) = &mut client.sender else {
        panic!("expected h2")
    };
    // `/hello` takes GET only, so the server answers 405 before it has read the body.
    let (mut sender, body) =
        http_body_util::channel::Channel::<_, std::convert::Infallible>::new(1);
    let request = Request::post(format!("https://{SERVICE_NAME}/hello"))
        .body(http_body_util::BodyExt::boxed(body))
        .unwrap();
    send.ready().await.unwrap();
    let response = send.send_request(request);
    sender
        .send_data(axum::body::Bytes::from_static(b"first part"))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(response.status(), 405);
    // The stream is not reset under a client that is still sending: the rest of its body goes out,
    // and then the answer ends cleanly.
    for _ in 0..3 {
        sender
            .send_data(axum::body::Bytes::from(vec![b'x'; 64 * 1024]))
            .await
            .expect("the server still reads the body");
    }
    drop(sender);
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .expect("the answer ends")
    .expect("the answer ends without a reset");
    // The test app's 405 has no body; what matters is that it ended without a reset.
    assert!(answer.to_bytes().is_empty());
    assert_eq!(client.get("/hello").await.unwrap().0, 200);

    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_http2_connection_accepted_before_the_listener_closed_gets_its_first_answer() {
    let dir = temp_dir("settle-h2");
    let certs = generate_certs(&dir);
    let opts = fast_options();
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, opts).await;
    server.shutdown.cancel();
    // Connected (TLS and the HTTP/2 handshake) within the grace period; the first request only
    // comes after the listener has closed and the drain has begun. The client's connection task
    // answers the server's pings meanwhile, so a GOAWAY sent now would not include the request.
    tokio::time::sleep(opts.shutdown_grace / 2).await;
    let mut client = Client::handshake(connect(server.addr, &certs.ca_cert, &[H2]).await).await;
    tokio::time::sleep(opts.shutdown_grace + Duration::from_millis(300)).await;
    let (status, version, body) = client.get("/hello").await.expect("answered");
    assert_eq!(
        (status, version, body.as_str()),
        (200, Version::HTTP_2, "hello")
    );
    let report = tokio::time::timeout(Duration::from_secs(5), server.handle)
        .await
        .expect("serve returned")
        .unwrap();
    assert!(report.drained, "{report:?}");
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_returns() {
    let dir = temp_dir("drain");
    let certs = generate_certs(&dir);
    let opts = fast_options();
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, opts).await;

    let mut h1 = Client::handshake(connect(server.addr, &certs.ca_cert, &[HTTP11]).await).await;
    let mut h2 = Client::handshake(connect(server.addr, &certs.ca_cert, &[H2]).await).await;
    let in_flight_h1 = tokio::spawn(async move { h1.get("/slow").await });
    let in_flight_h2 = tokio::spawn(async move { h2.get("/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shutdown_at = Instant::now();
    server.shutdown.cancel();

    // New connections are still accepted during the grace period.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = Client::handshake(connect(server.addr, &certs.ca_cert, &[HTTP11]).await).await;
    assert_eq!(late.get("/hello").await.unwrap().0, 200);

    let (status, _, body) = in_flight_h1.await.unwrap().expect("in-flight h1 request");
    assert_eq!((status, body.as_str()), (200, "slow"));
    let (status, _, body) = in_flight_h2.await.unwrap().expect("in-flight h2 request");
    assert_eq!((status, body.as_str()), (200, "slow"));

    let report = tokio::time::timeout(Duration::from_secs(5), server.handle)
        .await
        .expect("serve returned")
        .unwrap();
    assert!(report.drained, "{report:?}");
    assert_eq!(report.aborted, 0);
    assert!(shutdown_at.elapsed() >= opts.shutdown_grace);
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "listener closed after the grace period"
    );
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_drain_that_times_out_aborts_the_rest() {
    let dir = temp_dir("drain-timeout");
    let certs = generate_certs(&dir);
    let opts = ServeOptions {
        shutdown_grace: Duration::ZERO,
        drain_timeout: Duration::from_millis(200),
        ..fast_options()
    };
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, opts).await;
    let mut client = Client::handshake(connect(server.addr, &certs.ca_cert, &[HTTP11]).await).await;
    let in_flight = tokio::spawn(async move { client.get("/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(5), server.handle)
        .await
        .expect("serve returned")
        .unwrap();
    assert!(!report.drained);
    assert_eq!(report.aborted, 1);
    assert!(in_flight.await.unwrap().is_err());
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_panicking_handler_only_loses_its_own_connection() {
    let dir = temp_dir("panic");
    let certs = generate_certs(&dir);
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, fast_options()).await;
    let mut bystander =
        Client::handshake(connect(server.addr, &certs.ca_cert, &[HTTP11]).await).await;

    for alpn in [HTTP11, H2] {
        let mut victim =
            Client::handshake(connect(server.addr, &certs.ca_cert, &[alpn]).await).await;
        let outcome = tokio::time::timeout(Duration::from_secs(5), victim.get("/panic")).await;
        assert!(matches!(outcome, Ok(Err(_))), "{alpn:?}: {outcome:?}");
        if alpn == H2 {
            // Only the stream is reset: the connection's other streams go on.
            assert_eq!(victim.get("/hello").await.unwrap().0, 200);
        }
    }
    assert_eq!(bystander.get("/hello").await.unwrap().0, 200);
    let mut fresh = Client::handshake(connect(server.addr, &certs.ca_cert, &[H2]).await).await;
    assert_eq!(fresh.get("/hello").await.unwrap().0, 200);

    server.shutdown.cancel();
    let report = server.handle.await.unwrap();
    assert_eq!(
        report.panicked, 1,
        "the h1 connection task; a panicking h2 stream ends its own task, and only its stream is reset"
    );
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_silent_client_cannot_hold_a_handshake_open() {
    let dir = temp_dir("silent");
    let certs = generate_certs(&dir);
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, fast_options()).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    read_to_close(&mut silent, Duration::from_secs(5)).await;
    server.shutdown.cancel();
    let report = server.handle.await.unwrap();
    assert_eq!(report.handshake_failures, 1);
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn the_admin_port_serves_plain_http_and_shuts_down() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let opts = ServeOptions {
        shutdown_grace: Duration::ZERO,
        ..fast_options()
    };
    let handle = tokio::spawn(serve(listener, None, app(), opts, token.cancelled_owned()));

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (response, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(response.ends_with("hello"), "{response:?}");

    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    assert!(report.drained);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_request_deadline() {
    let dir = temp_dir("idle");
    let certs = generate_certs(&dir);
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, fast_options()).await;
    let mut client = Client::handshake(connect(server.addr, &certs.ca_cert, &[HTTP11]).await).await;
    assert_eq!(client.get("/hello").await.unwrap().0, 200);
    // Idle for longer than request_deadline (1 s): the deadline runs from a request's first byte.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(client.get("/hello").await.unwrap().0, 200);
    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let dir = temp_dir("idle-timeout");
    let certs = generate_certs(&dir);
    let opts = ServeOptions {
        idle_timeout: Duration::from_millis(500),
        ..fast_options()
    };
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, opts).await;
    let mut stream = connect(server.addr, &certs.ca_cert, &[HTTP11]).await;
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let (response, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let idle = closed - answered;
    assert!(
        idle >= Duration::from_millis(400) && idle < Duration::from_secs(3),
        "{idle:?}"
    );
    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn the_deadline_counts_from_the_first_byte_of_the_head() {
    let dir = temp_dir("first-byte");
    let certs = generate_certs(&dir);
    let server = TestServer::start(&certs.tls_cert, &certs.tls_key, None, fast_options()).await;
    let stream = connect(server.addr, &certs.ca_cert, &[HTTP11]).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        writer.write_all(b"POST /echo HTTP/1.1\r\n").await.ok();
        for header in ["host: x\r\n", "x-a: b\r\n", "x-b: c\r\n"] {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer.write_all(header.as_bytes()).await.ok();
        }
        writer.write_all(b"content-length: 50\r\n\r\n").await.ok();
        for _ in 0..50 {
            if writer.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (response, closed) = read_to_close(&mut reader, Duration::from_secs(5)).await;
    let took = closed - started;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    // Head took 0.6 s of the 1 s budget; the body gets only what is left (counted from the end of
    // the head, the cut-off would come at 1.6 s).
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    trickle.abort();
    server.shutdown.cancel();
    server.handle.await.unwrap();
    fs::remove_dir_all(dir).ok();
}
