//! What every party computes alike about its driver's position, so that
//! two parties can tell whether their drivers made the same calls (promise
//! M8): the call-site [`Fingerprint`] of each object, sent with its value or
//! its failure, and the [`PositionDigest`] of every object made, sent in
//! [`FinishedFrame::digest`](crate::FinishedFrame::digest) when a driver
//! finishes.
//!
//! Both are FNV-1a 64 over explicit little-endian bytes: the same on every
//! architecture, in every build, in every process running the same driver.
//! Changing what is hashed, or in what order, makes parties of different
//! versions report divergences that are not there: the unit tests below pin
//! known values so that such a change is seen.

use std::fmt;

use crate::frame::ObjectId;
use crate::names::PartyName;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

/// FNV-1a 64, byte by byte.
#[derive(Clone, Copy)]
struct Fnv1a(u64);

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
        }
    }
}

/// The call-site fingerprint of an object: a hash of where the driver made
/// it (source file, line, the output's index, the call's name), the same in
/// every party that runs the same driver. It travels in
/// [`ObjectHeader::fingerprint`](crate::ObjectHeader::fingerprint) and
/// [`RemoteErrorFrame::fingerprint`](crate::RemoteErrorFrame::fingerprint)
/// as its `u64`.
///
/// ```
/// use xsilo_wire::Fingerprint;
/// let here = Fingerprint::of_rust_call("src/main.rs", 10, 5, 0, None);
/// assert_eq!(here, Fingerprint::of_rust_call("src/main.rs", 10, 5, 0, None));
/// assert_ne!(here, Fingerprint::of_rust_call("src/main.rs", 10, 5, 1, None));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// No call site: what an actor's id adds to the [`PositionDigest`], and
    /// what a failure announced without a fingerprint is kept with (it is
    /// then not compared).
    pub const NONE: Self = Self(0);

    /// The fingerprint of output `output` of a call made at a Rust call
    /// site (`std::panic::Location`: file, line, column), with the call's
    /// name if it has one.
    pub fn of_rust_call(
        file: &str,
        line: u32,
        column: u32,
        output: usize,
        name: Option<&str>,
    ) -> Self {
        let mut h = Fnv1a(FNV_OFFSET);
        h.write(file.as_bytes());
        h.write(&line.to_le_bytes());
        h.write(&column.to_le_bytes());
        h.write(&(output as u64).to_le_bytes());
        Self::named(h, name)
    }

    /// The fingerprint of output `output` of a call made at a Python call
    /// site (file, line), with the call's name if it has one. Prefixed with
    /// `py\0`, so that it never equals a Rust call site's.
    pub fn of_python_call(file: &str, line: u32, output: usize, name: Option<&str>) -> Self {
        let mut h = Fnv1a(FNV_OFFSET);
        h.write(b"py\0");
        h.write(file.as_bytes());
        h.write(&line.to_le_bytes());
        h.write(&(output as u64).to_le_bytes());
        Self::named(h, name)
    }

    fn named(mut h: Fnv1a, name: Option<&str>) -> Self {
        if let Some(name) = name {
            h.write(&(name.len() as u64).to_le_bytes());
            h.write(name.as_bytes());
        }
        Self(h.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The running digest of a driver's position: every object id it made, in
/// program order, with its call-site fingerprint and its owner. Two
/// parties whose drivers made the same calls end with the same digest;
/// [`FinishedFrame::digest`](crate::FinishedFrame::digest) carries it.
///
/// ```
/// use xsilo_wire::{Fingerprint, ObjectId, PartyName, PositionDigest};
/// let alice: PartyName = "alice".parse().unwrap();
/// let mut mine = PositionDigest::new();
/// let mut theirs = PositionDigest::new();
/// mine.add(ObjectId(1), Fingerprint(7), Some(&alice));
/// theirs.add(ObjectId(1), Fingerprint(8), Some(&alice));
/// assert_ne!(mine, theirs);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PositionDigest(u64);

impl PositionDigest {
    /// The digest of a driver that has made nothing yet.
    pub const fn new() -> Self {
        Self(FNV_OFFSET)
    }

    /// The driver made object `id` at call site `fingerprint`, owned by
    /// `owner`; `None` for a call on a party unknown to the job, which every
    /// party makes as its own (and an actor's id adds [`Fingerprint::NONE`]).
    pub fn add(&mut self, id: ObjectId, fingerprint: Fingerprint, owner: Option<&PartyName>) {
        let mut h = Fnv1a(self.0);
        h.write(&id.0.to_le_bytes());
        h.write(&fingerprint.0.to_le_bytes());
        if let Some(owner) = owner {
            h.write(owner.as_str().as_bytes());
        }
        self.0 = h.0;
    }

    /// The digest as [`FinishedFrame::digest`](crate::FinishedFrame::digest)
    /// carries it.
    pub const fn value(self) -> u64 {
        self.0
    }
}

impl Default for PositionDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PositionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PositionDigest({:#018x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::hash::Hasher;

    use super::*;

    fn party(s: &str) -> PartyName {
        s.parse().unwrap()
    }

    // The values below were computed by the implementations these
    // functions replace (the `fnv` crate's hasher in `xsilo` and
    // `xsilo-py`, the hand-written digest in the object table): a party
    // built before the move and one built after compute alike.

    #[test]
    fn a_rust_call_site_has_a_known_fingerprint() {
        let f =
            |output, name| Fingerprint::of_rust_call("examples/two_party.rs", 12, 5, output, name);
        assert_eq!(f(0, None), Fingerprint(0x2c95_52d3_4838_af00));
        assert_eq!(f(1, Some("train")), Fingerprint(0x82f7_587e_f990_c57e));
    }

    #[test]
    fn a_python_call_site_has_a_known_fingerprint() {
        assert_eq!(
            Fingerprint::of_python_call("train.py", 7, 0, None),
            Fingerprint(0xcb48_808a_eb65_2a36)
        );
        assert_eq!(
            Fingerprint::of_python_call("train.py", 7, 2, Some("Model.fit")),
            Fingerprint(0x9b7d_cf8c_2765_9a7b)
        );
    }

    #[test]
    fn a_position_has_a_known_digest() {
        let mut d = PositionDigest::new();
        assert_eq!(d.value(), 0xcbf2_9ce4_8422_2325);
        d.add(ObjectId(1), Fingerprint(0x1234), Some(&party("alice")));
        assert_eq!(d.value(), 0x7af8_e0ea_53c7_a89e);
        d.add(ObjectId(2), Fingerprint::NONE, Some(&party("bob")));
        assert_eq!(d.value(), 0x82e5_5687_3365_5877);
        d.add(ObjectId(3), Fingerprint(u64::MAX), None);
        assert_eq!(d.value(), 0x581f_d848_3a22_15ec);
    }

    #[test]
    fn fingerprints_tell_sites_outputs_names_and_languages_apart() {
        let base = Fingerprint::of_rust_call("a.rs", 1, 1, 0, None);
        for other in [
            Fingerprint::of_rust_call("b.rs", 1, 1, 0, None),
            Fingerprint::of_rust_call("a.rs", 2, 1, 0, None),
            Fingerprint::of_rust_call("a.rs", 1, 2, 0, None),
            Fingerprint::of_rust_call("a.rs", 1, 1, 1, None),
            Fingerprint::of_rust_call("a.rs", 1, 1, 0, Some("")),
            Fingerprint::of_python_call("a.rs", 1, 0, None),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn the_digest_depends_on_order_and_owner() {
        let (a, b) = (party("alice"), party("bob"));
        let digest = |steps: &[(u64, u64, Option<&PartyName>)]| {
            let mut d = PositionDigest::new();
            for (id, fp, owner) in steps {
                d.add(ObjectId(*id), Fingerprint(*fp), *owner);
            }
            d
        };
        let one = digest(&[(1, 10, Some(&a)), (2, 20, Some(&b))]);
        assert_eq!(one, digest(&[(1, 10, Some(&a)), (2, 20, Some(&b))]));
        assert_ne!(one, digest(&[(2, 20, Some(&b)), (1, 10, Some(&a))]));
        assert_ne!(one, digest(&[(1, 10, Some(&b)), (2, 20, Some(&b))]));
        assert_ne!(one, digest(&[(1, 10, Some(&a)), (2, 20, None)]));
    }

    #[test]
    fn the_hash_is_fnv_1a_64_as_the_fnv_crate_computes_it() {
        for bytes in [&b""[..], b"a", b"foobar", &[0, 255, 17, 3, 128]] {
            let mut ours = Fnv1a(FNV_OFFSET);
            ours.write(bytes);
            let mut theirs = fnv::FnvHasher::default();
            theirs.write(bytes);
            assert_eq!(ours.0, theirs.finish(), "{bytes:?}");
        }
    }
}
