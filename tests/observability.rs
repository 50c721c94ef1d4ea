//! Observability end to end (promise F2): alice and bob as processes over
//! QUIC, each serving its metrics for Prometheus (`[observability]
//! prometheus`); a 256 MiB object from alice to bob reports its progress
//! while it travels, and both endpoints, scraped over HTTP, show what
//! crossed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::job;
use serde_json::{json, Value as Json};
use xsilo::{Bytes, Direction, Error, Fed};

const BIG: usize = 256 << 20;

/// The driver programs.
async fn scenario(name: &str, party: &str, fed: &Fed) -> Result<Json, Error> {
    match name {
        "big_object" => {
            // Collects this party's progress reports as they come.
            let mut progress = fed.progress().expect("the first call gets the receiver");
            let reports = tokio::task::spawn_local(async move {
                let mut seen = Vec::new();
                while let Some(p) = progress.recv().await {
                    let done = p.done == p.total;
                    seen.push(json!([p.direction == Direction::Sending, p.done, p.total]));
                    if done {
                        break;
                    }
                }
                seen
            });
            let big = fed
                .party("alice")
                .task((), |()| Bytes::from(vec![7u8; BIG]));
            let len = fed.party("bob").task(big, |b: Bytes| b.len() as u64);
            let got = fed.get(&len).await?;
            let reports = tokio::time::timeout(common::BOUND, reports)
                .await
                .map_err(|_| {
                    Error::Runtime(xsilo::RuntimeError::Setup(format!(
                        "{party}: the last progress report never came"
                    )))
                })?
                .unwrap_or_default();
            // Scraped by the test now, while the party is up.
            println!("SCRAPE-NOW");
            common::wait_go().await;
            Ok(json!({ "len": got, "progress": reports }))
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// The child process: one party running one scenario.
#[test]
#[ignore = "runs only as a child process of the observability tests"]
fn child() {
    common::child_main(|name, party, fed| Box::pin(scenario(name, party, fed)));
}

/// A TCP port free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics`, bounded.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the sample `name{labels}` (labels in the exporter's order).
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(&format!("{name}{{"))
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_256_mib_object_shows_progress_and_both_endpoints_show_what_crossed() {
    let ports = [free_port(), free_port()];
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let job = job(&["alice", "bob"], |p, c| {
        c.observability.prometheus = Some(addrs[usize::from(p == "bob")]);
    });
    let mut run = job.start("big_object", &[]);
    run.wait_line("alice", "SCRAPE-NOW");
    run.wait_line("bob", "SCRAPE-NOW");
    let (alice, bob) = (scrape(addrs[0]), scrape(addrs[1]));
    let labels = |me, peer| [("party", me), ("peer", peer)];
    let total = BIG as f64;
    let sent = sample(&alice, "xsilo_sent_bytes_total", &labels("alice", "bob"));
    assert!(sent >= Some(total), "alice sent {sent:?}:\n{alice}");
    let received = sample(&bob, "xsilo_received_bytes_total", &labels("bob", "alice"));
    assert!(received >= Some(total), "bob received {received:?}:\n{bob}");
    assert!(
        sample(&alice, "xsilo_sent_objects_total", &labels("alice", "bob")) >= Some(1.0),
        "{alice}"
    );
    let rtt = sample(&alice, "xsilo_peer_rtt_seconds", &labels("alice", "bob"));
    assert!(
        rtt.is_some_and(|r| r > 0.0 && r < 1.0),
        "rtt {rtt:?}:\n{alice}"
    );
    assert_eq!(
        sample(&alice, "xsilo_sends_in_flight", &labels("alice", "bob")),
        Some(0.0),
        "{alice}"
    );
    assert_eq!(
        sample(&alice, "xsilo_send_errors_total", &labels("alice", "bob")),
        Some(0.0),
        "{alice}"
    );
    for (body, me) in [(&alice, "alice"), (&bob, "bob")] {
        assert!(
            sample(body, "xsilo_live_objects", &[("party", me)]).is_some(),
            "{body}"
        );
        assert!(body.contains("# HELP xsilo_sent_bytes_total"), "{body}");
    }
    run.go("alice");
    run.go("bob");
    let out = run.finish();
    for (p, sending) in [("alice", true), ("bob", false)] {
        let v = out[p].value();
        assert_eq!(v["len"], json!(BIG), "{p}");
        let reports = v["progress"].as_array().unwrap();
        let mine: Vec<(u64, u64)> = reports
            .iter()
            .filter(|r| r[0] == json!(sending))
            .map(|r| (r[1].as_u64().unwrap(), r[2].as_u64().unwrap()))
            .collect();
        // Reports before the end: progress visible while it travels.
        assert!(
            mine.iter().filter(|(d, t)| d < t).count() >= 3,
            "{p}: {reports:?}"
        );
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0), "{p}: {mine:?}");
        assert_eq!(mine.last(), Some(&(BIG as u64, BIG as u64)), "{p}");
        assert!(mine.len() <= 8, "rate-limited: {p}: {mine:?}");
    }
}
