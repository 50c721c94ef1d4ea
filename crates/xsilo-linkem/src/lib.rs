//! # xsilo-linkem: a wide-area link in user space
//!
//! Cross-silo jobs run across the internet: tens of milliseconds of delay,
//! some loss, a bottleneck rate. This kernel kind has no netem, and tests
//! should not need root, so benchmarks and tests put a [`Relay`] between
//! two QUIC endpoints: a UDP relay that forwards datagrams with a one-way
//! delay, random loss, a rate limit and a bounded queue, each way, with a
//! seed so that a run can be repeated.
//!
//! A party is pointed at the relay's address instead of its peer's: the
//! relay keeps one upstream socket per client address, so the peer sees
//! the relay as its client and answers through it. QUIC does not care:
//! identity is in the certificates, not in addresses.
//!
//! The model of one direction of the link ([`LinkProfile`]):
//!
//! 1. a datagram is lost with probability `loss` (independently);
//! 2. otherwise it joins the bottleneck queue; if the queue already holds
//!    `queue` bytes it is dropped (tail drop, as a router does);
//! 3. it leaves the queue at `rate` bytes per second (its length plus 28
//!    bytes of IPv4 and UDP headers, as on a wire);
//! 4. it arrives `delay` after leaving.
//!
//! Delivery runs on tokio's timer, whose resolution is one millisecond: a
//! datagram may arrive up to about a millisecond late.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::{Duration, Instant};
//! use tokio::net::UdpSocket;
//! use xsilo_linkem::{LinkProfile, Relay};
//!
//! let echo = UdpSocket::bind("127.0.0.1:0").await?;
//! let target = echo.local_addr()?;
//! tokio::spawn(async move {
//!     let mut buf = [0u8; 1500];
//!     while let Ok((n, from)) = echo.recv_from(&mut buf).await {
//!         let _ = echo.send_to(&buf[..n], from).await;
//!     }
//! });
//! // 20 ms round trip: 10 ms each way.
//! let profile = LinkProfile::wan(Duration::from_millis(20), 0.0, 125_000_000);
//! let relay = Relay::start("127.0.0.1:0".parse().unwrap(), target, profile, 7).await?;
//! let client = UdpSocket::bind("127.0.0.1:0").await?;
//! let started = Instant::now();
//! client.send_to(b"ping", relay.addr()).await?;
//! let mut buf = [0u8; 16];
//! let (n, _) = client.recv_from(&mut buf).await?;
//! assert_eq!(&buf[..n], b"ping");
//! assert!(started.elapsed() >= Duration::from_millis(20));
//! # Ok(()) }
//! ```

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bytes of IPv4 and UDP headers counted against the rate for each datagram.
pub const HEADER_BYTES: usize = 28;

/// Largest datagram the relay forwards (larger ones are truncated by the
/// socket, as a link with that MTU would drop them).
const MAX_DATAGRAM: usize = 65_535;

/// One direction of an emulated link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkProfile {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Probability that a datagram is lost, from 0 to 1.
    pub loss: f64,
    /// Bottleneck rate in bytes per second, headers included; `None` for
    /// no limit (then there is no queue either).
    pub rate: Option<u64>,
    /// Bytes the bottleneck queue holds before it drops (tail drop).
    pub queue: usize,
}

impl LinkProfile {
    /// No delay, no loss, no limit.
    pub fn ideal() -> Self {
        Self {
            delay: Duration::ZERO,
            loss: 0.0,
            rate: None,
            queue: 0,
        }
    }

    /// A wide-area link of round trip `rtt` (half of it each way), random
    /// `loss`, a bottleneck of `rate` bytes per second and a queue of one
    /// bandwidth-delay product (at least 64 KiB), a common router sizing.
    pub fn wan(rtt: Duration, loss: f64, rate: u64) -> Self {
        let bdp = (rate as f64 * rtt.as_secs_f64()) as usize;
        Self {
            delay: rtt / 2,
            loss,
            rate: Some(rate),
            queue: bdp.max(64 * 1024),
        }
    }

    /// The same profile with a queue of `bytes`.
    pub fn with_queue(mut self, bytes: usize) -> Self {
        self.queue = bytes;
        self
    }
}

/// Counters of one direction of a relay.
#[derive(Debug, Default)]
pub struct LinkStats {
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    lost: AtomicU64,
    dropped: AtomicU64,
}

/// A snapshot of [`LinkStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Datagrams delivered (or handed to the socket for delivery).
    pub forwarded: u64,
    /// Their bytes, without headers.
    pub forwarded_bytes: u64,
    /// Datagrams lost at random.
    pub lost: u64,
    /// Datagrams dropped because the queue was full.
    pub dropped: u64,
}

impl LinkStats {
    fn snapshot(&self) -> LinkCounts {
        LinkCounts {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The admission side of one direction: loss, queue and rate. Sans-IO: it
/// is given the time and says when the datagram arrives, or that it does
/// not.
#[derive(Debug)]
pub struct Lane {
    profile: LinkProfile,
    rng: fastrand::Rng,
    /// When the bottleneck has sent everything admitted so far.
    busy_until: Option<Instant>,
}

/// What a [`Lane`] does with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered at this instant.
    Arrives(Instant),
    /// Lost at random.
    Lost,
    /// Dropped: the queue was full.
    Dropped,
}

impl Lane {
    /// A lane with `profile`, its losses drawn from `seed`.
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        Self {
            profile,
            rng: fastrand::Rng::with_seed(seed),
            busy_until: None,
        }
    }

    /// The fate of a datagram of `len` bytes entering the link at `now`.
    pub fn admit(&mut self, len: usize, now: Instant) -> Fate {
        if self.profile.loss > 0.0 && self.rng.f64() < self.profile.loss {
            return Fate::Lost;
        }
        let Some(rate) = self.profile.rate.filter(|r| *r > 0) else {
            return Fate::Arrives(now + self.profile.delay);
        };
        let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
        let waiting = (start - now).as_secs_f64() * rate as f64;
        let wire = (len + HEADER_BYTES) as f64;
        if waiting + wire > self.profile.queue.max(len + HEADER_BYTES) as f64 {
            return Fate::Dropped;
        }
        let leaves = start + Duration::from_secs_f64(wire / rate as f64);
        self.busy_until = Some(leaves);
        Fate::Arrives(leaves + self.profile.delay)
    }
}

struct Shared {
    forward: LinkStats,
    reverse: LinkStats,
}

/// A UDP relay emulating a link between its clients and one target. Stops
/// when dropped.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("addr", &self.addr).finish()
    }
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => SocketAddr::from((ip, 0)),
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(ip) if ip.is_loopback() => SocketAddr::from((ip, 0)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// Socket buffers of the relay's sockets: large enough that a burst the
/// link would queue is not dropped by the OS first.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

fn bind(addr: SocketAddr, connect: Option<SocketAddr>) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The OS may cap these (net.core.rmem_max); the relay works either way.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    if let Some(to) = connect {
        socket.connect(&to.into())?;
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

impl Relay {
    /// Listens on `listen` and forwards to `target` with `profile` in both
    /// directions; the two directions draw their losses from seeds derived
    /// from `seed`. Needs a tokio runtime with timers and I/O.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        profile: LinkProfile,
        seed: u64,
    ) -> io::Result<Self> {
        Self::start_asymmetric(listen, target, profile.clone(), profile, seed).await
    }

    /// As [`Relay::start`], with `forward` from clients to the target and
    /// `reverse` back.
    pub async fn start_asymmetric(
        listen: SocketAddr,
        target: SocketAddr,
        forward: LinkProfile,
        reverse: LinkProfile,
        seed: u64,
    ) -> io::Result<Self> {
        let front = Arc::new(bind(listen, None)?);
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            forward: LinkStats::default(),
            reverse: LinkStats::default(),
        });
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let front_task = tokio::spawn(serve_front(
            front,
            target,
            forward,
            reverse,
            seed,
            shared.clone(),
            Arc::downgrade(&tasks),
        ));
        if let Ok(mut t) = tasks.lock() {
            t.push(front_task);
        }
        Ok(Self {
            addr,
            shared,
            tasks,
        })
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters from clients to the target.
    pub fn forward(&self) -> LinkCounts {
        self.shared.forward.snapshot()
    }

    /// Counters from the target back to clients.
    pub fn reverse(&self) -> LinkCounts {
        self.shared.reverse.snapshot()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

type Outgoing = mpsc::UnboundedSender<(Instant, Bytes)>;

/// One client of the relay: its upstream socket and its forward lane.
struct Session {
    lane: Lane,
    out: Outgoing,
}

fn remember(tasks: &std::sync::Weak<Mutex<Vec<JoinHandle<()>>>>, task: JoinHandle<()>) {
    match tasks.upgrade() {
        Some(tasks) => match tasks.lock() {
            Ok(mut t) => t.push(task),
            Err(_) => task.abort(),
        },
        None => task.abort(),
    }
}

async fn serve_front(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    forward: LinkProfile,
    reverse: LinkProfile,
    seed: u64,
    shared: Arc<Shared>,
    tasks: std::sync::Weak<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut next_seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    loop {
        let (n, from) = match front.recv_from(&mut buf).await {
            Ok(r) => r,
            // An ICMP error from an earlier send to a client: not ours.
            Err(_) => continue,
        };
        let now = Instant::now();
        let session = match sessions.entry(from) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let upstream = match bind(unspecified_like(target), Some(target)) {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        tracing::warn!(error = %e, %target, "relay: cannot open an upstream socket");
                        continue;
                    }
                };
                let (to_target, queued) = mpsc::unbounded_channel();
                remember(
                    &tasks,
                    tokio::spawn(deliver(queued, Dest::Connected(upstream.clone()))),
                );
                let (to_client, back) = mpsc::unbounded_channel();
                remember(
                    &tasks,
                    tokio::spawn(deliver(back, Dest::To(front.clone(), from))),
                );
                next_seed = next_seed.wrapping_add(2);
                remember(
                    &tasks,
                    tokio::spawn(serve_upstream(
                        upstream,
                        Lane::new(reverse.clone(), next_seed ^ 0xA5A5),
                        to_client,
                        shared.clone(),
                    )),
                );
                v.insert(Session {
                    lane: Lane::new(forward.clone(), next_seed),
                    out: to_target,
                })
            }
        };
        admit(
            &mut session.lane,
            &session.out,
            &buf[..n],
            now,
            &shared.forward,
        );
    }
}

fn admit(lane: &mut Lane, out: &Outgoing, datagram: &[u8], now: Instant, stats: &LinkStats) {
    match lane.admit(datagram.len(), now) {
        Fate::Arrives(at) => {
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
            stats
                .forwarded_bytes
                .fetch_add(datagram.len() as u64, Ordering::Relaxed);
            let _ = out.send((at, Bytes::copy_from_slice(datagram)));
        }
        Fate::Lost => {
            stats.lost.fetch_add(1, Ordering::Relaxed);
        }
        Fate::Dropped => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn serve_upstream(
    upstream: Arc<UdpSocket>,
    mut lane: Lane,
    out: Outgoing,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(n) => admit(&mut lane, &out, &buf[..n], Instant::now(), &shared.reverse),
            // The target is not bound (yet): ICMP port unreachable shows up
            // here on a connected socket. Keep listening.
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

enum Dest {
    Connected(Arc<UdpSocket>),
    To(Arc<UdpSocket>, SocketAddr),
}

/// Sends each datagram at its arrival time. Arrival times of one lane never
/// decrease (a constant delay after a FIFO queue), so a queue suffices.
async fn deliver(mut queued: mpsc::UnboundedReceiver<(Instant, Bytes)>, dest: Dest) {
    while let Some((at, datagram)) = queued.recv().await {
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        // A send to a port nobody has bound yet fails; the datagram is lost,
        // as it would be on a real network.
        let _ = match &dest {
            Dest::Connected(s) => s.send(&datagram).await,
            Dest::To(s, to) => s.send_to(&datagram, *to).await,
        };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_paces_at_its_rate_and_drops_when_the_queue_is_full() {
        let now = Instant::now();
        // 1000 bytes per second, a queue of 2 datagrams of 72 bytes on the wire.
        let profile = LinkProfile {
            delay: Duration::from_millis(10),
            loss: 0.0,
            rate: Some(1000),
            queue: 144,
        };
        let mut lane = Lane::new(profile, 1);
        let first = lane.admit(44, now);
        assert_eq!(
            first,
            Fate::Arrives(now + Duration::from_millis(72) + Duration::from_millis(10))
        );
        let second = lane.admit(44, now);
        assert_eq!(
            second,
            Fate::Arrives(now + Duration::from_millis(144) + Duration::from_millis(10))
        );
        // 144 bytes are waiting: the third does not fit.
        assert_eq!(lane.admit(44, now), Fate::Dropped);
        // Once the first has left, there is room again.
        let later = now + Duration::from_millis(72);
        assert_eq!(
            lane.admit(44, later),
            Fate::Arrives(now + Duration::from_millis(216) + Duration::from_millis(10))
        );
    }

    #[test]
    fn losses_follow_the_probability_and_the_seed() {
        let profile = LinkProfile {
            loss: 0.01,
            ..LinkProfile::ideal()
        };
        let now = Instant::now();
        let count = |seed| {
            let mut lane = Lane::new(profile.clone(), seed);
            (0..100_000)
                .filter(|_| lane.admit(1200, now) == Fate::Lost)
                .count()
        };
        let lost = count(42);
        assert!((800..1200).contains(&lost), "lost {lost} of 100000 at 1%");
        assert_eq!(count(42), lost, "the same seed loses the same datagrams");
    }

    #[test]
    fn without_a_rate_there_is_only_the_delay() {
        let now = Instant::now();
        let mut lane = Lane::new(
            LinkProfile {
                delay: Duration::from_millis(25),
                ..LinkProfile::ideal()
            },
            3,
        );
        for _ in 0..1000 {
            assert_eq!(
                lane.admit(1500, now),
                Fate::Arrives(now + Duration::from_millis(25))
            );
        }
    }
}
