//! `codec`: a numeric array's encode plus decode (promise L2), the raw
//! little-endian path (`xsilo_wire::array`, what the value codec uses for
//! `Vec<f32>` and kin) against msgpack (`rmp_serde`, what it used before
//! and still uses for every other type), in the same run.
//!
//! Each sample encodes a fresh 1M-element `Vec<f32>` into a new buffer and
//! decodes it into a new `Vec`, as a party does for each value it sends or
//! receives (fresh allocations included: glibc serves them with mmap).

use std::hint::black_box;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use xsilo_wire::array;

use crate::stats::{emit, median};

/// Elements of the array.
const N: usize = 1 << 20;

fn sample(f: impl Fn() -> Result<usize>) -> Result<f64> {
    let t = Instant::now();
    black_box(f()?);
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Prints the figures.
pub(crate) fn run(quick: bool) -> Result<()> {
    let reps = if quick { 30 } else { 200 };
    let model: Vec<f32> = (0..N).map(|i| (i as f32).sin()).collect();
    eprintln!("codec: encode + decode of a {N}-element Vec<f32>, {reps} samples each, alternating");
    let raw = || -> Result<usize> {
        let bytes = bytes::Bytes::from(array::encode_vec(black_box(&model)));
        let back: Vec<f32> = array::decode_vec(&bytes)?;
        Ok(back.len())
    };
    let msgpack = || -> Result<usize> {
        let bytes = bytes::Bytes::from(rmp_serde::to_vec_named(black_box(&model))?);
        let back: Vec<f32> = rmp_serde::from_slice(&bytes)?;
        Ok(back.len())
    };
    // Both must give back the model.
    let check: Vec<f32> = array::decode_vec(&array::encode_vec(&model))?;
    anyhow::ensure!(check == model, "the array path changed the model");
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        sample(raw)?;
        sample(msgpack)?;
    }
    for _ in 0..reps {
        fast.push(sample(raw)?);
        slow.push(sample(msgpack)?);
    }
    emit(
        "codec.f32_1M_encode_decode",
        median(&mut fast),
        "ms",
        Some(median(&mut slow)),
        json!({ "target": "<= 2 ms", "samples": reps,
                "baseline_is": "rmp_serde::to_vec_named + from_slice of the same Vec<f32>",
                "bytes": array::encode_vec(&model).len(),
                "msgpack_bytes": rmp_serde::to_vec_named(&model)?.len() }),
    );
    Ok(())
}
