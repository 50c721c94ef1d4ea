//! `transport`: xsilo's QUIC transport against raw quinn, same TLS, same
//! QUIC settings, same threading, same run.
//!
//! Two processes: this one is alice (the sender), a child is bob (the
//! receiver). Each runs on an actix System, the single-threaded runtime the
//! parties use in production. Raw quinn: a stream per request carrying an
//! 8-byte length and the payload, which bob reads into one buffer and answers
//! with one byte. xsilo: `send_object`, which also carries the header, goes
//! through bob's event channel and waits for bob's runtime to acknowledge.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use serde_json::json;
use xsilo_transport::devcert::DevCa;
use xsilo_transport::{
    setup, OutboundObject, PeerAddress, QuicEndpoint, TlsIdentity, Transport, TransportConfig,
    TransportEvent,
};
use xsilo_wire::{ObjectId, PartyName};

use crate::child::{exit_with_parent, Party};
use crate::stats::{emit, median, percentile};

/// The child's TLS material: "ca|cert|key" in PEM.
pub(crate) const TLS_ENV: &str = "XSILO_BENCH_TLS";

pub(crate) fn party(name: &str) -> Result<PartyName> {
    Ok(name.parse()?)
}

pub(crate) fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The sender side: prints the figures.
pub(crate) fn run(quick: bool) -> Result<()> {
    let (alice, bob) = (party("alice")?, party("bob")?);
    let ca = DevCa::new()?;
    let bob_cert = ca.issue(&bob)?;
    let spec = format!("{}|{}|{}", ca.ca_pem(), bob_cert.cert_pem, bob_cert.key_pem);
    let child = Party::spawn(&["serve-transport"], &[(TLS_ENV, spec)])?;
    let ports = child.expect_line("PORTS", Duration::from_secs(30))?;
    let mut ports = ports.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(t_port)), Some(Ok(r_port))) = (ports.next(), ports.next()) else {
        bail!("the child printed unreadable ports");
    };
    let tls = ca.identity(&alice)?;
    let (bulk_mib, bulk_reps, small_n) = if quick {
        (64, 2, 2_000)
    } else {
        (256, 3, 10_000)
    };
    eprintln!(
        "transport: alice -> bob over loopback, two processes, one actix System (1 thread) each; \
         bulk {bulk_mib} MiB x {bulk_reps}, small 64 B x {small_n}"
    );
    actix_rt::System::new().block_on(async move {
        let config = TransportConfig::default();
        let ep = QuicEndpoint::bind(alice.clone(), loopback(), &tls, config.clone())?;
        let book: BTreeMap<PartyName, PeerAddress> = [
            (alice.clone(), ep.local_addr().into()),
            (bob.clone(), SocketAddr::from(([127, 0, 0, 1], t_port)).into()),
        ]
        .into();
        let xs = ep.join("bench".parse()?, book)?;
        let raw_ep = setup::quinn_endpoint(&alice, loopback(), &tls, &config)?;
        let raw = raw_ep
            .connect(SocketAddr::from(([127, 0, 0, 1], r_port)), bob.as_str())?
            .await
            .context("raw quinn connect")?;

        let mut seq = 0u64;
        let mut xs_send = |payload: Bytes| {
            seq += 1;
            xs.send_object(
                &bob,
                OutboundObject {
                    object: ObjectId(seq),
                    consumer: seq,
                    fingerprint: 0,
                    payload: payload.into(),
                },
            )
        };

        // Warm-up: connections, windows, allocator.
        let warm = Bytes::from(vec![1u8; 16 << 20]);
        raw_request(&raw, warm.clone()).await?;
        xs_send(warm).await?;
        let small = Bytes::from(vec![7u8; 64]);
        for _ in 0..300 {
            raw_request(&raw, small.clone()).await?;
            xs_send(small.clone()).await?;
        }

        // Bulk: alternate raw and xsilo so that noise hits both alike.
        let big = Bytes::from(vec![42u8; bulk_mib << 20]);
        let (mut raw_bulk, mut xs_bulk) = (Vec::new(), Vec::new());
        for _ in 0..bulk_reps {
            let t = Instant::now();
            raw_request(&raw, big.clone()).await?;
            raw_bulk.push(bulk_mib as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            xs_send(big.clone()).await?;
            xs_bulk.push(bulk_mib as f64 / t.elapsed().as_secs_f64());
        }
        drop(big);

        // Small objects, sequential, each acknowledged; alternating blocks.
        let (mut raw_lat, mut xs_lat) = (Vec::new(), Vec::new());
        let blocks = 10;
        for _ in 0..blocks {
            for _ in 0..small_n / blocks {
                let t = Instant::now();
                raw_request(&raw, small.clone()).await?;
                raw_lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            for _ in 0..small_n / blocks {
                let t = Instant::now();
                xs_send(small.clone()).await?;
                xs_lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }

        let threading = json!({ "threading": "actix System (1 thread) per party, 2 processes" });
        emit(
            &format!("transport.bulk_{bulk_mib}MiB"),
            median(&mut xs_bulk),
            "MiB/s",
            Some(median(&mut raw_bulk)),
            json!({ "target_ratio": ">= 0.8", "runs": bulk_reps, "baseline_is": "raw quinn, same TLS and QUIC settings" }),
        );
        emit(
            "transport.small_64B_p50",
            median(&mut xs_lat),
            "us",
            Some(median(&mut raw_lat)),
            json!({ "target_ratio": "<= 1.5", "samples": xs_lat.len(), "baseline_is": "raw quinn request/response, stream per request" }),
        );
        emit(
            "transport.small_64B_p99",
            percentile(&mut xs_lat, 99.0),
            "us",
            Some(percentile(&mut raw_lat, 99.0)),
            threading,
        );
        xs.close().await;
        raw.close(0u32.into(), b"done");
        Ok::<(), anyhow::Error>(())
    })?;
    drop(child);
    Ok(())
}

/// One raw quinn request: length, payload, finish; wait for the one-byte
/// answer.
pub(crate) async fn raw_request(conn: &quinn::Connection, payload: Bytes) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_chunk(Bytes::copy_from_slice(
        &(payload.len() as u64).to_be_bytes(),
    ))
    .await?;
    send.write_chunk(payload).await?;
    send.finish()?;
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await?;
    Ok(())
}

/// bob's TLS material from [`TLS_ENV`], as [`Party::spawn`] passed it.
pub(crate) fn tls_from_env() -> Result<TlsIdentity> {
    let spec = std::env::var(TLS_ENV).context("started without its TLS material")?;
    let mut parts = spec.split('|');
    let (Some(ca), Some(cert), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("malformed {TLS_ENV}");
    };
    Ok(TlsIdentity::from_pem(ca, cert, key)?)
}

/// bob's xsilo transport in job "bench", accepting every object at once.
/// He never dials alice; her entry only admits her hello.
pub(crate) fn serve_xsilo_bob(tls: &TlsIdentity, config: TransportConfig) -> Result<QuicEndpoint> {
    let (alice, bob) = (party("alice")?, party("bob")?);
    let ep = QuicEndpoint::bind(bob.clone(), loopback(), tls, config)?;
    let book: BTreeMap<PartyName, PeerAddress> = [
        (alice, SocketAddr::from(([127, 0, 0, 1], 9)).into()),
        (bob, ep.local_addr().into()),
    ]
    .into();
    let xs = ep.join("bench".parse()?, book)?;
    let mut events = xs.take_events().ok_or_else(|| anyhow!("events taken"))?;
    tokio::spawn(async move {
        // Holds the job open while it serves.
        let _xs = xs;
        while let Some(event) = events.recv().await {
            if let TransportEvent::Object(o) = event {
                o.ack.accept();
            }
        }
    });
    Ok(ep)
}

/// The receiving side (bob), started by [`run`] as a child process.
pub(crate) fn serve() -> Result<()> {
    exit_with_parent(Duration::from_secs(900));
    let tls = tls_from_env()?;
    let bob = party("bob")?;
    actix_rt::System::new().block_on(async move {
        let config = TransportConfig::default();
        let ep = serve_xsilo_bob(&tls, config.clone())?;
        let raw_ep = setup::quinn_endpoint(&bob, loopback(), &tls, &config)?;
        let raw_port = raw_ep.local_addr()?.port();
        tokio::spawn(raw_server(raw_ep));
        println!("PORTS {} {}", ep.local_addr().port(), raw_port);
        // Serve until the parent closes our stdin (exit_with_parent).
        std::future::pending::<()>().await;
        Ok(())
    })
}

pub(crate) async fn raw_server(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(raw_answer(send, recv));
            }
        });
    }
}

async fn raw_answer(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<()> {
    let mut len = [0u8; 8];
    recv.read_exact(&mut len).await?;
    let len = u64::from_be_bytes(len) as usize;
    let mut buf = Vec::with_capacity(len.min(16 << 20));
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        buf.extend_from_slice(&chunk.bytes);
    }
    if buf.len() != len {
        bail!("raw request of {} bytes, {len} announced", buf.len());
    }
    send.write_all(&[1]).await?;
    send.finish()?;
    Ok(())
}
