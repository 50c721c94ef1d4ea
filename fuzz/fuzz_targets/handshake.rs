//! Feeds arbitrary bytes through the acceptor's and the dialer's handshake
//! and control-stream paths as the transport runs them: a length-prefixed
//! hello decoded and judged by `check_hello` (the input's first byte picks
//! what the acceptor serves and what the certificate names), a hello reply
//! judged by `check_hello_reply`, an object header judged by
//! `check_header`, and the control stream's frames through the frame
//! decoder in any chunking. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsilo_wire::codec::{decode_body, parse_length, FrameDecoder};
use xsilo_wire::frame::{ControlFrame, Hello, HelloReply, ObjectHeader};
use xsilo_wire::handshake::{check_header, check_hello, check_hello_reply, AcceptRules};
use xsilo_wire::limits::{LENGTH_PREFIX, MAX_CONTROL_FRAME, MAX_HEADER_FRAME};
use xsilo_wire::{JobName, PartyName};

struct Rules {
    local: PartyName,
    mode: u8,
}

impl AcceptRules for Rules {
    fn local_party(&self) -> &PartyName {
        &self.local
    }
    fn serves_job(&self, job: &JobName) -> bool {
        self.mode & 1 == 1 || job.as_str() == "demo"
    }
    fn knows_party(&self, _: &JobName, party: &PartyName) -> bool {
        self.mode & 2 == 2 || party.as_str() == "bob"
    }
    fn certificate_names(&self, party: &PartyName) -> bool {
        self.mode & 4 == 4 || party.as_str() == "bob"
    }
    fn certificate_party(&self, _: &JobName) -> Option<PartyName> {
        (self.mode & 8 == 8).then(|| "bob".parse().ok()).flatten()
    }
}

/// The body after a length prefix, if the prefix is within `limit`.
fn framed(data: &[u8], limit: u32) -> Option<&[u8]> {
    let prefix: [u8; LENGTH_PREFIX] = data.get(..LENGTH_PREFIX)?.try_into().ok()?;
    let len = parse_length(prefix, limit).ok()?;
    data.get(LENGTH_PREFIX..LENGTH_PREFIX + len)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (Ok(local), Ok(job), Ok(bob)) = (
        "alice".parse::<PartyName>(),
        "demo".parse::<JobName>(),
        "bob".parse::<PartyName>(),
    ) else {
        return;
    };
    let rules = Rules {
        local: local.clone(),
        mode,
    };
    if let Some(body) = framed(rest, MAX_CONTROL_FRAME) {
        if let Ok(hello) = decode_body::<Hello>(body, "hello") {
            let _ = check_hello(&hello, &rules);
        }
        if let Ok(reply) = decode_body::<HelloReply>(body, "hello reply") {
            let _ = check_hello_reply(reply, &local);
        }
    }
    if let Some(body) = framed(rest, MAX_HEADER_FRAME) {
        if let Ok(header) = decode_body::<ObjectHeader>(body, "object header") {
            let _ = check_header(&header, &job, &bob, u64::from(mode) << 20);
        }
    }
    // The control stream after the hello, in chunks of 1..=16 bytes.
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    for chunk in rest.chunks(usize::from(mode % 16) + 1) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame::<ControlFrame>() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                // A malformed frame closes the connection: stop reading.
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});
