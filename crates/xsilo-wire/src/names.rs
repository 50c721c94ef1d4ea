//! Validated names of parties and jobs.
//!
//! A party name is also the DNS name that its certificate must carry (a
//! `subjectAltName` of type DNS), so it follows the rules of one DNS label:
//! 1 to 63 characters, lowercase ASCII letters, digits and `-`, starting with
//! a letter and not ending with `-`. A job name is 1 to 128 characters of
//! ASCII letters, digits, `-`, `_` and `.`.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a name was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid {kind} name {name:?}: {reason}")]
pub struct NameError {
    /// `"party"` or `"job"`.
    pub kind: &'static str,
    /// The rejected name (truncated to 80 characters).
    pub name: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

fn reject(kind: &'static str, name: &str, reason: &'static str) -> NameError {
    NameError {
        kind,
        name: name.chars().take(80).collect(),
        reason,
    }
}

/// The name of a party (an organisation taking part in a job), such as
/// `alice`. It is the identity bound to the party's certificate.
///
/// ```
/// use xsilo_wire::PartyName;
/// let alice: PartyName = "alice".parse().unwrap();
/// assert_eq!(alice.as_str(), "alice");
/// assert!("Alice".parse::<PartyName>().is_err()); // uppercase is not a DNS label
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartyName(String);

impl PartyName {
    /// Validates `name` as a party name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let bytes = name.as_bytes();
        if bytes.is_empty() {
            return Err(reject("party", &name, "it is empty"));
        }
        if bytes.len() > 63 {
            return Err(reject("party", &name, "it is longer than 63 characters"));
        }
        if !bytes[0].is_ascii_lowercase() {
            return Err(reject(
                "party",
                &name,
                "it must start with a lowercase letter",
            ));
        }
        if bytes[bytes.len() - 1] == b'-' {
            return Err(reject("party", &name, "it must not end with '-'"));
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return Err(reject(
                "party",
                &name,
                "only lowercase letters, digits and '-' are allowed (it is a DNS label)",
            ));
        }
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a job. Every connection names its job; an endpoint refuses
/// hellos and data for jobs it does not serve (promise C4).
///
/// ```
/// use xsilo_wire::JobName;
/// assert!("demo-2026.v1".parse::<JobName>().is_ok());
/// assert!("".parse::<JobName>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobName(String);

impl JobName {
    /// Validates `name` as a job name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(reject("job", &name, "it is empty"));
        }
        if name.len() > 128 {
            return Err(reject("job", &name, "it is longer than 128 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(reject(
                "job",
                &name,
                "only ASCII letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! name_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl std::str::FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl TryFrom<&str> for $t {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl From<$t> for String {
            fn from(n: $t) -> String {
                n.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
name_impls!(PartyName);
name_impls!(JobName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_names_follow_dns_label_rules() {
        for ok in ["alice", "bob-2", "a", "c0ffee"] {
            assert!(PartyName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "1abc",
            "bob-",
            "bo b",
            "bob.x",
            &"a".repeat(64),
        ] {
            let err = PartyName::new(bad).unwrap_err();
            assert_eq!(err.kind, "party");
        }
    }

    #[test]
    fn job_names_reject_separators_and_empties() {
        assert!(JobName::new("job_1.v2-x").is_ok());
        assert!(JobName::new("a/b").is_err());
        assert!(JobName::new(" ").is_err());
        assert!(JobName::new("x".repeat(129)).is_err());
    }

    #[test]
    fn error_names_the_rule() {
        let err = PartyName::new("Bob").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid party name \"Bob\": it must start with a lowercase letter"
        );
    }

    #[test]
    fn deserialising_validates() {
        let bytes = rmp_serde::to_vec(&"Not A Party").unwrap();
        assert!(rmp_serde::from_slice::<PartyName>(&bytes).is_err());
        let bytes = rmp_serde::to_vec(&"carol").unwrap();
        assert_eq!(
            rmp_serde::from_slice::<PartyName>(&bytes).unwrap().as_str(),
            "carol"
        );
    }
}
