//! Property tests of the codec: round trips of every frame, and arbitrary
//! input never panics and never buffers past the limit (promise C8).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use xsilo_wire::codec::{decode_body, encode_to_vec, FrameDecoder};
use xsilo_wire::frame::*;
use xsilo_wire::payload::PayloadAssembler;
use xsilo_wire::{JobName, PartyName, WireError};

fn party() -> impl Strategy<Value = PartyName> {
    "[a-z][a-z0-9-]{0,20}[a-z0-9]".prop_map(|s| PartyName::new(s).unwrap())
}

fn job() -> impl Strategy<Value = JobName> {
    "[A-Za-z0-9._-]{1,40}".prop_map(|s| JobName::new(s).unwrap())
}

fn control() -> impl Strategy<Value = ControlFrame> {
    prop_oneof![
        any::<u64>().prop_map(|seq| ControlFrame::Heartbeat { seq }),
        (
            party(),
            any::<u64>(),
            ".{0,40}",
            proptest::option::of(".{0,200}"),
            proptest::collection::vec(".{0,50}", 0..4)
        )
            .prop_map(
                |(origin, id, kind, message, causes)| ControlFrame::RemoteError(RemoteErrorFrame {
                    origin,
                    object: ObjectId(id),
                    origin_object: ObjectId(id / 2),
                    kind,
                    message,
                    causes,
                    fingerprint: (id % 3 == 0).then_some(id ^ 0x5a5a),
                    name: (id % 5 == 0).then(|| "train".to_owned()),
                })
            ),
        ".{0,100}".prop_map(|reason| ControlFrame::Abort { reason }),
        Just(ControlFrame::Goodbye),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(objects, digest, clean)| {
            ControlFrame::Finished(xsilo_wire::FinishedFrame {
                objects,
                digest,
                clean,
            })
        }),
    ]
}

fn header() -> impl Strategy<Value = ObjectHeader> {
    (
        job(),
        party(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(job, src, object, consumer, fingerprint, payload_len)| ObjectHeader {
                job,
                src,
                object: ObjectId(object),
                consumer,
                fingerprint,
                payload_len,
                resend: payload_len % 2 == 1,
            },
        )
}

proptest! {
    #[test]
    fn control_frames_round_trip_through_any_chunking(frames in proptest::collection::vec(control(), 1..8), cut in 1usize..50) {
        let mut bytes = Vec::new();
        for f in &frames {
            xsilo_wire::codec::encode_frame(f, &mut bytes).unwrap();
        }
        let mut dec = FrameDecoder::new(1 << 20);
        let mut out = Vec::new();
        for chunk in bytes.chunks(cut) {
            dec.push(chunk);
            while let Some(f) = dec.next_frame::<ControlFrame>().unwrap() {
                out.push(f);
            }
        }
        dec.finish().unwrap();
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn headers_and_hellos_round_trip(h in header(), from in party(), to in party(), job in job(),
                                     meta in proptest::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..5)) {
        let bytes = encode_to_vec(&h).unwrap();
        prop_assert_eq!(decode_body::<ObjectHeader>(&bytes[4..], "header").unwrap(), h);
        let hello = Hello { version: 1, job, party: from, to, metadata: meta, probe: None };
        let bytes = encode_to_vec(&hello).unwrap();
        prop_assert_eq!(decode_body::<Hello>(&bytes[4..], "hello").unwrap(), hello);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), limit in 0u32..1024) {
        let mut dec = FrameDecoder::new(limit);
        dec.push(&bytes);
        // Either an error, a frame, or a request for more: never a panic,
        // never a frame longer than the limit.
        loop {
            match dec.next_frame::<ControlFrame>() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(WireError::FrameTooLarge { announced, limit: l }) => {
                    prop_assert!(announced > l);
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = decode_body::<ObjectHeader>(&bytes, "header");
        let _ = decode_body::<Hello>(&bytes, "hello");
        let _ = decode_body::<HelloReply>(&bytes, "hello reply");
        let _ = decode_body::<DataReply>(&bytes, "data reply");
    }

    #[test]
    fn mutated_frames_never_panic(h in header(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = encode_to_vec(&h).unwrap();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] ^= b;
        }
        let mut dec = FrameDecoder::new(64 * 1024);
        dec.push(&bytes);
        let _ = dec.next_frame::<ObjectHeader>();
    }

    #[test]
    fn payload_assembler_takes_exactly_the_announced_bytes(len in 0usize..4096, extra in 0usize..64, cut in 1usize..300) {
        let data: Vec<u8> = (0..len + extra).map(|i| i as u8).collect();
        let mut p = PayloadAssembler::new(len as u64, 4096).unwrap();
        let mut overrun = false;
        for chunk in data.chunks(cut) {
            if p.push(chunk).is_err() {
                overrun = true;
                break;
            }
        }
        if extra > 0 {
            prop_assert!(overrun);
        } else {
            prop_assert_eq!(&p.finish().unwrap().to_bytes()[..], &data[..]);
        }
    }
}

#[test]
fn oversized_length_is_refused_before_buffering_the_body() {
    let mut dec = FrameDecoder::new(100);
    dec.push(&1000u32.to_be_bytes());
    assert_eq!(
        dec.next_frame::<ControlFrame>(),
        Err(WireError::FrameTooLarge {
            announced: 1000,
            limit: 100
        })
    );
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = encode_to_vec(&ControlFrame::Goodbye).unwrap();
    bytes.push(0xc0);
    let err = decode_body::<ControlFrame>(&bytes[4..], "control").unwrap_err();
    assert!(matches!(err, WireError::Malformed { .. }), "{err}");
}

#[test]
fn cut_frame_is_reported_at_the_end_of_the_stream() {
    let bytes = encode_to_vec(&ControlFrame::Abort {
        reason: "x".repeat(10),
    })
    .unwrap();
    let mut dec = FrameDecoder::new(1024);
    dec.push(&bytes[..bytes.len() - 1]);
    assert_eq!(dec.next_frame::<ControlFrame>(), Ok(None));
    assert!(matches!(
        dec.finish(),
        Err(WireError::TruncatedFrame { .. })
    ));
}

#[test]
fn payload_over_limit_and_truncated_payload_are_errors() {
    assert!(matches!(
        PayloadAssembler::new(2000, 1000),
        Err(WireError::PayloadTooLarge { .. })
    ));
    let mut p = PayloadAssembler::new(10, 1000).unwrap();
    p.push(b"12345").unwrap();
    assert_eq!(
        p.finish().unwrap_err(),
        WireError::PayloadTruncated {
            received: 5,
            announced: 10
        }
    );
}

#[test]
fn raw_payload_is_never_a_msgpack_array_of_integers() {
    // The header carries only a length; payload bytes travel raw. A header is
    // small and its size does not depend on the payload length.
    let h = ObjectHeader {
        job: "demo".parse().unwrap(),
        src: "alice".parse().unwrap(),
        object: ObjectId(1),
        consumer: 2,
        fingerprint: 3,
        payload_len: 1 << 30,
        resend: false,
    };
    assert!(encode_to_vec(&h).unwrap().len() < 128);
}
