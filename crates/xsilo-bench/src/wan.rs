//! `wan`: xsilo's transport across emulated wide-area links, against raw
//! quinn with quinn's own defaults through the same emulator in the same
//! run, and against the emulated link's capacity (promise W1).
//!
//! Two processes per link profile: this one is alice (the sender) and runs
//! the link emulator (`xsilo-linkem`, on its own thread), a child is bob.
//! Alice reaches bob only through the emulator, one relay per bob port.
//! Per profile:
//!
//! * bulk: one object of 64 MiB (and 256 MiB without `--quick`) with
//!   `send_object`, from the first byte to bob's runtime's answer; raw
//!   quinn: one stream of as many bytes, bob counting what arrived, for
//!   at most a time cap (quinn's Cubic collapses under loss; the figure is
//!   then what arrived within the cap);
//! * xsilo with Cubic and with NewReno (its other controllers), capped the
//!   same way, for the choice of the default;
//! * the small-object round trip (64 B and bob's answer), the network part
//!   of a tiny-task round, against the link's round trip.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;
use xsilo_linkem::{LinkProfile, Relay};
use xsilo_transport::devcert::DevCa;
use xsilo_transport::{
    setup, Congestion, OutboundObject, PeerAddress, QuicEndpoint, TlsIdentity, Transport,
    TransportConfig,
};
use xsilo_wire::{ObjectId, PartyName};

use crate::child::{exit_with_parent, Party};
use crate::stats::{emit, median};
use crate::transport::{loopback, party, serve_xsilo_bob, tls_from_env, TLS_ENV};

/// The emulated bottleneck: 1 Gbit/s.
const RATE: u64 = 125_000_000;

struct Link {
    name: &'static str,
    rtt: Duration,
    loss: f64,
    target: Option<f64>,
}

const LINKS: [Link; 3] = [
    Link {
        name: "10ms_0pct",
        rtt: Duration::from_millis(10),
        loss: 0.0,
        target: None,
    },
    Link {
        name: "50ms_0.1pct",
        rtt: Duration::from_millis(50),
        loss: 0.001,
        target: Some(50.0),
    },
    Link {
        name: "100ms_1pct",
        rtt: Duration::from_millis(100),
        loss: 0.01,
        target: Some(15.0),
    },
];

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
}

/// The link emulator's own runtime, so that relaying does not wait behind
/// alice's single control thread.
struct Emulator {
    runtime: tokio::runtime::Runtime,
}

impl Emulator {
    fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("linkem")
            .enable_all()
            .build()?;
        Ok(Self { runtime })
    }

    fn relay(&self, target: SocketAddr, profile: LinkProfile, seed: u64) -> Result<Relay> {
        Ok(self
            .runtime
            .block_on(Relay::start(loopback(), target, profile, seed))?)
    }
}

/// Runs the benchmark; prints JSON lines.
pub(crate) fn run(quick: bool, only: Option<&str>) -> Result<()> {
    if let Some(name) = only {
        if !LINKS.iter().any(|l| l.name == name) {
            bail!("no link {name:?}: give one of 10ms_0pct, 50ms_0.1pct, 100ms_1pct");
        }
    }
    let (alice, bob) = (party("alice")?, party("bob")?);
    let ca = DevCa::new()?;
    let bob_cert = ca.issue(&bob)?;
    let spec = format!("{}|{}|{}", ca.ca_pem(), bob_cert.cert_pem, bob_cert.key_pem);
    let tls = ca.identity(&alice)?;
    let emulator = Emulator::new()?;
    let (sizes, cap, rounds): (&[usize], Duration, usize) = if quick {
        (&[64], Duration::from_secs(10), 20)
    } else {
        (&[64, 256], Duration::from_secs(30), 50)
    };
    eprintln!(
        "wan: alice -> bob through a user-space link emulator at 1 Gbit/s; bulk {sizes:?} MiB \
         (others capped at {cap:?}), {rounds} small round trips per link"
    );
    for (i, link) in LINKS.iter().enumerate() {
        if only.is_some_and(|name| name != link.name) {
            continue;
        }
        let child = Party::spawn(&["serve-wan"], &[(TLS_ENV, spec.clone())])?;
        let ports = child.expect_line("PORTS", Duration::from_secs(30))?;
        let mut ports = ports.split_whitespace().map(str::parse::<u16>);
        let (Some(Ok(t_port)), Some(Ok(r_port))) = (ports.next(), ports.next()) else {
            bail!("the child printed unreadable ports");
        };
        let profile = LinkProfile::wan(link.rtt, link.loss, RATE);
        let seed = 1000 + i as u64;
        let x_relay = emulator.relay(
            SocketAddr::from(([127, 0, 0, 1], t_port)),
            profile.clone(),
            seed,
        )?;
        let r_relay = emulator.relay(SocketAddr::from(([127, 0, 0, 1], r_port)), profile, seed)?;
        eprintln!(
            "wan: link {} (rtt {:?}, loss {})",
            link.name, link.rtt, link.loss
        );
        actix_rt::System::new().block_on(one_link(
            link,
            &alice,
            &bob,
            &tls,
            x_relay.addr(),
            r_relay.addr(),
            sizes,
            cap,
            rounds,
        ))?;
        drop(child);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one_link(
    link: &Link,
    alice: &PartyName,
    bob: &PartyName,
    tls: &TlsIdentity,
    x_addr: SocketAddr,
    r_addr: SocketAddr,
    sizes: &[usize],
    cap: Duration,
    rounds: usize,
) -> Result<()> {
    let capacity = mib_per_s(RATE, 1.0) * 1200.0 / 1228.0;
    let raw_ep = raw_endpoint(alice, tls)?;
    let raw = raw_ep
        .connect(r_addr, bob.as_str())?
        .await
        .context("raw quinn connect through the relay")?;
    let mut raw_rate = None;
    for &mib in sizes {
        let payload = Bytes::from(vec![42u8; mib << 20]);
        // xsilo with its defaults.
        let xs = XsiloSender::join(alice, bob, tls, x_addr, TransportConfig::default())?;
        xs.send(Bytes::from_static(b"warm")).await?;
        let t = Instant::now();
        let sent = tokio::time::timeout(Duration::from_secs(600), xs.send(payload.clone())).await;
        let secs = t.elapsed().as_secs_f64();
        xs.close().await;
        // Raw quinn, quinn's defaults, once per link.
        if raw_rate.is_none() {
            let (bytes, secs) = raw_bulk(&raw, payload.clone(), cap).await?;
            raw_rate = Some((mib_per_s(bytes, secs), bytes));
        }
        let (raw_mibs, raw_bytes) = raw_rate.unwrap_or((0.0, 0));
        let value = match sent {
            Ok(Ok(())) => mib_per_s((mib as u64) << 20, secs),
            _ => 0.0,
        };
        let mut extra = json!({
            "link": link.name, "rtt_ms": link.rtt.as_millis() as u64, "loss": link.loss,
            "capacity_mibs": (capacity * 10.0).round() / 10.0,
            "baseline_is": format!("raw quinn with quinn's defaults (Cubic, 1.25 MiB stream window) through the same emulator; {} MiB arrived within {:?}", raw_bytes >> 20, cap),
            "congestion": "bbr (xsilo's default)",
            "completed": matches!(sent, Ok(Ok(()))),
        });
        match link.target {
            Some(t) => extra["target"] = json!(format!(">= {t} MiB/s")),
            None => extra["target_ratio"] = json!(">= 0.9"),
        }
        emit(
            &format!("wan.bulk_{mib}MiB.{}", link.name),
            value,
            "MiB/s",
            Some(raw_mibs),
            extra,
        );
    }
    // The other controllers, for the choice of the default.
    let probe = Bytes::from(vec![42u8; 64 << 20]);
    for congestion in [Congestion::Cubic, Congestion::NewReno] {
        let mut config = TransportConfig::default();
        config.congestion = congestion;
        let xs = XsiloSender::join(alice, bob, tls, x_addr, config)?;
        xs.send(Bytes::from_static(b"warm")).await?;
        let t = Instant::now();
        let sent = tokio::time::timeout(cap, xs.send(probe.clone())).await;
        let secs = t.elapsed().as_secs_f64();
        xs.close().await;
        let value = match sent {
            Ok(Ok(())) => mib_per_s(64 << 20, secs),
            // Did not finish within the cap: at most 64 MiB in `cap`.
            _ => 0.0,
        };
        emit(
            &format!("wan.bulk_64MiB_{congestion}.{}", link.name),
            value,
            "MiB/s",
            None,
            json!({ "link": link.name, "congestion": congestion.to_string(),
                    "completed": matches!(sent, Ok(Ok(()))),
                    "note": format!("0 when 64 MiB did not arrive within {cap:?}") }),
        );
    }
    // Small round trips, on a fresh raw connection: quinn's defaults have
    // no keep-alive, and the capped runs above can outlast its 30 s idle
    // timeout.
    raw.close(0u32.into(), b"bulk done");
    let raw = raw_ep
        .connect(r_addr, bob.as_str())?
        .await
        .context("raw quinn connect through the relay")?;
    let xs = XsiloSender::join(alice, bob, tls, x_addr, TransportConfig::default())?;
    let small = Bytes::from(vec![7u8; 64]);
    xs.send(small.clone()).await?;
    crate::transport::raw_request(&raw, small.clone()).await?;
    let (mut x_lat, mut r_lat) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        xs.send(small.clone()).await?;
        x_lat.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        crate::transport::raw_request(&raw, small.clone()).await?;
        r_lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    xs.close().await;
    emit(
        &format!("wan.small_64B_p50.{}", link.name),
        median(&mut x_lat),
        "ms",
        Some(median(&mut r_lat)),
        json!({ "link": link.name, "link_rtt_ms": link.rtt.as_millis() as u64, "samples": rounds,
                "baseline_is": "raw quinn request/response through the same emulator",
                "note": "the network part of a tiny-task round: one object and its acknowledgement" }),
    );
    raw.close(0u32.into(), b"done");
    raw_ep.wait_idle().await;
    Ok(())
}

/// A raw quinn client endpoint with xsilo's TLS and quinn's default
/// transport settings (only the socket buffers are xsilo's, so that the OS
/// does not drop what neither controller sent too fast).
fn raw_endpoint(party: &PartyName, tls: &TlsIdentity) -> Result<quinn::Endpoint> {
    let config = TransportConfig::default();
    let (mut server, mut client) = setup::quinn_configs(party, tls, &config)?;
    let defaults = Arc::new(quinn::TransportConfig::default());
    server.transport_config(defaults.clone());
    client.transport_config(defaults);
    let socket = setup::bind_socket(loopback(), &config)?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// One stream of `payload`; bob reports the bytes he has read. Returns the
/// bytes that arrived and the seconds they took, at most `cap`.
async fn raw_bulk(conn: &quinn::Connection, payload: Bytes, cap: Duration) -> Result<(u64, f64)> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let len = payload.len() as u64;
    let started = Instant::now();
    let writer = async {
        send.write_chunk(Bytes::copy_from_slice(&len.to_be_bytes()))
            .await?;
        send.write_chunk(payload).await?;
        send.finish()?;
        Ok::<_, anyhow::Error>(())
    };
    // Bob's last report: bytes read and when.
    let last = std::cell::Cell::new((0u64, 0.0f64));
    let counts = async {
        let mut count = [0u8; 8];
        while last.get().0 < len {
            recv.read_exact(&mut count).await?;
            last.set((u64::from_be_bytes(count), started.elapsed().as_secs_f64()));
        }
        Ok::<_, anyhow::Error>(())
    };
    let counted = tokio::time::timeout(cap, async {
        let (w, c) = tokio::join!(writer, counts);
        w?;
        c
    })
    .await;
    // Within the cap or not, the figure is what arrived by bob's last report.
    if let Ok(Err(e)) = counted {
        return Err(e);
    }
    // Capped: drop what is still queued, so the connection is free again.
    let _ = send.reset(0u32.into());
    let _ = recv.stop(0u32.into());
    Ok(last.get())
}

/// Alice's xsilo transport to bob through the relay.
struct XsiloSender {
    transport: xsilo_transport::QuicTransport,
    bob: PartyName,
    seq: std::cell::Cell<u64>,
}

impl XsiloSender {
    fn join(
        alice: &PartyName,
        bob: &PartyName,
        tls: &TlsIdentity,
        relay: SocketAddr,
        config: TransportConfig,
    ) -> Result<Self> {
        let ep = QuicEndpoint::bind(alice.clone(), loopback(), tls, config)?;
        let book: BTreeMap<PartyName, PeerAddress> = [
            (alice.clone(), ep.local_addr().into()),
            (bob.clone(), relay.into()),
        ]
        .into();
        Ok(Self {
            transport: ep.join("bench".parse()?, book)?,
            bob: bob.clone(),
            seq: std::cell::Cell::new(0),
        })
    }

    async fn send(&self, payload: Bytes) -> Result<()> {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        self.transport
            .send_object(
                &self.bob,
                OutboundObject {
                    object: ObjectId(seq),
                    consumer: seq,
                    fingerprint: 0,
                    payload: payload.into(),
                },
            )
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.transport.close().await;
    }
}

/// Bob, started by [`run`] as a child process: xsilo's transport with its
/// defaults and a raw quinn server with quinn's defaults that reports, every
/// MiB, how many bytes of a bulk stream it has read.
pub(crate) fn serve() -> Result<()> {
    exit_with_parent(Duration::from_secs(1800));
    let tls = tls_from_env()?;
    let bob = party("bob")?;
    actix_rt::System::new().block_on(async move {
        let ep = serve_xsilo_bob(&tls, TransportConfig::default())?;
        let raw_ep = raw_endpoint(&bob, &tls)?;
        let raw_port = raw_ep.local_addr()?.port();
        tokio::spawn(async move {
            while let Some(incoming) = raw_ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(raw_counting(send, recv));
                    }
                });
            }
        });
        println!("PORTS {} {}", ep.local_addr().port(), raw_port);
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Reads a length and that many bytes; for a request of more than 1 KiB
/// writes the running count every MiB and at the end, else one byte at the
/// end (the small request of [`crate::transport::raw_request`]).
async fn raw_counting(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<()> {
    let mut len = [0u8; 8];
    recv.read_exact(&mut len).await?;
    let len = u64::from_be_bytes(len);
    let counting = len > 1024;
    let (mut got, mut reported) = (0u64, 0u64);
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        got += chunk.bytes.len() as u64;
        if counting && (got - reported >= 1 << 20 || got == len) {
            send.write_all(&got.to_be_bytes()).await?;
            reported = got;
        }
    }
    if got != len {
        bail!("raw request of {got} bytes, {len} announced");
    }
    if !counting {
        send.write_all(&[1]).await?;
    }
    send.finish()?;
    Ok(())
}
