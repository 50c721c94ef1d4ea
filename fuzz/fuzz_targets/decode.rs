//! Feeds arbitrary bytes to every decoder of the wire protocol: the frame
//! decoder (with the input's first byte choosing the chunking), each frame
//! type's body decoder, the numeric-array decoder, and the payload
//! assembler. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsilo_wire::array;
use xsilo_wire::codec::{decode_body, FrameDecoder};
use xsilo_wire::frame::{ControlFrame, DataReply, Hello, HelloReply, ObjectHeader, Refusal};
use xsilo_wire::limits::MAX_CONTROL_FRAME;
use xsilo_wire::payload::PayloadAssembler;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    for chunk in rest.chunks(usize::from(cut).max(1)) {
        decoder.push(chunk);
        while let Ok(Some(_)) = decoder.next_frame::<ControlFrame>() {}
    }
    let _ = decoder.finish();
    let _ = decode_body::<Hello>(rest, "hello");
    let _ = decode_body::<HelloReply>(rest, "hello reply");
    let _ = decode_body::<ObjectHeader>(rest, "object header");
    let _ = decode_body::<DataReply>(rest, "data reply");
    let _ = decode_body::<Refusal>(rest, "refusal");
    let _ = array::decode::<f32>(rest);
    let _ = array::decode_vec::<u64>(rest);
    if let Ok(mut p) = PayloadAssembler::new(u64::from(cut) * 3, 1 << 20) {
        for chunk in rest.chunks(7) {
            if p.push(chunk).is_err() {
                return;
            }
        }
        let _ = p.finish();
    }
    // The whole input as one payload, cut as the first byte says: what is
    // assembled (typed or not) holds the input's bytes and takes as an
    // array exactly as the decoder decodes it.
    if let Ok(mut p) = PayloadAssembler::new(rest.len() as u64, 1 << 20) {
        for chunk in rest.chunks(usize::from(cut).max(1)) {
            if p.push(chunk).is_err() {
                return;
            }
        }
        if let Ok(payload) = p.finish() {
            assert_eq!(&payload.to_bytes()[..], rest);
            assert_eq!(payload.clone().into_vec::<f32>(), array::decode_vec::<f32>(rest));
            assert_eq!(payload.into_vec::<u32>(), array::decode_vec::<u32>(rest));
        }
    }
});
