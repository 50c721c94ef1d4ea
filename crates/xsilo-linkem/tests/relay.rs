//! The relay does what its profile says, measured over real UDP sockets on
//! loopback: round trip, loss and rate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};
use xsilo_linkem::{LinkProfile, Relay};

const BOUND: Duration = Duration::from_secs(20);

fn any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn echo_server() -> SocketAddr {
    let echo = UdpSocket::bind(any()).await.unwrap();
    let addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    addr
}

#[tokio::test]
async fn the_round_trip_is_twice_the_delay() {
    let target = echo_server().await;
    let profile = LinkProfile::wan(Duration::from_millis(50), 0.0, 125_000_000);
    let relay = Relay::start(any(), target, profile, 1).await.unwrap();
    let client = UdpSocket::bind(any()).await.unwrap();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..10u8 {
        let started = Instant::now();
        client.send_to(&[i; 32], relay.addr()).await.unwrap();
        let (n, _) = timeout(BOUND, client.recv_from(&mut buf))
            .await
            .expect("no echo through the relay within the bound")
            .unwrap();
        assert_eq!(&buf[..n], &[i; 32]);
        rtts.push(started.elapsed());
    }
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    assert!(
        median >= Duration::from_millis(50) && median < Duration::from_millis(58),
        "median round trip {median:?} for a 50 ms link"
    );
}

#[tokio::test]
async fn random_loss_matches_the_setting_and_is_counted() {
    let target = UdpSocket::bind(any()).await.unwrap();
    let forward = LinkProfile {
        loss: 0.02,
        ..LinkProfile::ideal()
    };
    let relay = Relay::start_asymmetric(
        any(),
        target.local_addr().unwrap(),
        forward,
        LinkProfile::ideal(),
        9,
    )
    .await
    .unwrap();
    let client = UdpSocket::bind(any()).await.unwrap();
    let sent = 5_000u64;
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        let mut buf = [0u8; 1500];
        // Ends when nothing has come for a second after the last datagram.
        while let Ok(Ok(_)) = timeout(Duration::from_secs(1), target.recv_from(&mut buf)).await {
            got += 1;
        }
        got
    });
    for i in 0..sent {
        client
            .send_to(&i.to_le_bytes(), relay.addr())
            .await
            .unwrap();
        if i % 100 == 0 {
            // Let the relay keep up, so that no socket buffer overflows.
            tokio::task::yield_now().await;
        }
    }
    let got = timeout(BOUND, receiver)
        .await
        .expect("receiver hung")
        .unwrap();
    let counts = relay.forward();
    assert_eq!(
        counts.forwarded + counts.lost,
        sent,
        "every datagram is forwarded or counted lost: {counts:?}"
    );
    assert_eq!(
        got, counts.forwarded,
        "what was forwarded arrived: {counts:?}"
    );
    let rate = counts.lost as f64 / sent as f64;
    assert!((0.012..0.028).contains(&rate), "loss {rate} for a 2% link");
}

#[tokio::test]
async fn the_rate_limit_paces_a_burst() {
    let target = UdpSocket::bind(any()).await.unwrap();
    // 1 MB/s and room for the whole burst in the queue.
    let forward = LinkProfile {
        delay: Duration::ZERO,
        loss: 0.0,
        rate: Some(1_000_000),
        queue: 4_000_000,
    };
    let relay = Relay::start_asymmetric(
        any(),
        target.local_addr().unwrap(),
        forward,
        LinkProfile::ideal(),
        3,
    )
    .await
    .unwrap();
    let client = UdpSocket::bind(any()).await.unwrap();
    let (count, size) = (400usize, 972usize); // 1000 bytes on the wire each
    let receiver = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let mut first = None;
        let mut last = Instant::now();
        for _ in 0..count {
            match timeout(BOUND, target.recv_from(&mut buf)).await {
                Ok(Ok(_)) => {
                    last = Instant::now();
                    first.get_or_insert(last);
                }
                _ => return None,
            }
        }
        first.map(|f| last - f)
    });
    for _ in 0..count {
        client
            .send_to(&vec![7u8; size], relay.addr())
            .await
            .unwrap();
    }
    let spread = timeout(BOUND, receiver)
        .await
        .expect("receiver hung")
        .unwrap()
        .expect("not every datagram arrived");
    // 399 datagrams of 1000 bytes after the first, at 1 MB/s: 0.399 s.
    let expected = Duration::from_millis(399);
    assert!(
        spread >= expected.mul_f64(0.95) && spread <= expected.mul_f64(1.1),
        "a burst of {count} x 1000 B took {spread:?} at 1 MB/s (expected about {expected:?})"
    );
    assert_eq!(relay.forward().dropped, 0);
}
