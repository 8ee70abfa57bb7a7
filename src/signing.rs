//! Secrets and signatures: the one place a subscription secret is read.
//!
//! A [`Secret`] is what a subscription signs with. Its `Debug` and `Display`
//! never show the value, so a `{:?}` of a subscription or a log field cannot
//! leak it; the value leaves the type only through [`Secret::expose`] (for
//! SQLite and the one answer that returns it in full) and [`Secret::masked`]
//! (for every other answer).
//!
//! Three parts use it:
//! - ingest checks a sender's `X-Signature` / `X-Hub-Signature-256`
//!   ([`Secret::verify_inbound`]);
//! - subscriptions generate new `whsec_` secrets ([`Secret::generate`]);
//! - delivery signs each attempt the Standard Webhooks way ([`Secret::sign`]).
//!
//! Time is an argument, never read here, so tests pin known signatures.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of Standard Webhooks secrets (`whsec_<base64 key>`).
pub const SECRET_PREFIX: &str = "whsec_";

/// A subscription's signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The secret as the user gave it (or as it was generated).
    value: String,
    /// The HMAC key of outbound signatures: the decoded bytes of a
    /// `whsec_<base64>` secret, or the secret's own bytes for any other
    /// form. Computed once, not per attempt.
    key: Box<[u8]>,
}

impl Secret {
    /// Wraps a secret read from a request or from SQLite.
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        let key = value
            .strip_prefix(SECRET_PREFIX)
            .and_then(|b64| BASE64.decode(b64).ok())
            .unwrap_or_else(|| value.as_bytes().to_vec())
            .into_boxed_slice();
        Secret { value, key }
    }

    /// A new random `whsec_` secret (24 random bytes).
    pub fn generate() -> Secret {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&a.as_bytes()[..]);
        bytes.extend_from_slice(&b.as_bytes()[..8]);
        Secret::new(format!("{SECRET_PREFIX}{}", BASE64.encode(bytes)))
    }

    /// The secret in full: for SQLite and for the answer of the request
    /// that created it, nothing else.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// `****` and the last four characters: how every answer but the
    /// creating one shows the secret.
    pub fn masked(&self) -> String {
        let start = self
            .value
            .char_indices()
            .rev()
            .nth(3)
            .map_or(0, |(index, _)| index);
        format!("****{}", &self.value[start..])
    }

    /// The `webhook-signature` header value of a delivery: `v1,<base64
    /// HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut m = mac(&self.key);
        m.update(webhook_id.as_bytes());
        m.update(b".");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        format!("v1,{}", BASE64.encode(m.finalize().into_bytes()))
    }

    /// Checks an inbound `X-Signature` / `X-Hub-Signature-256` value
    /// (`sha256=<hex HMAC-SHA256 of the raw body>`, keyed with the secret's
    /// bytes as senders such as GitHub do) in constant time.
    pub fn verify_inbound(&self, header: &str, body: &[u8]) -> bool {
        let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
            return false;
        };
        let Ok(expected) = hex::decode(hex_sig) else {
            return false;
        };
        let mut m = mac(self.value.as_bytes());
        m.update(body);
        m.verify_slice(&expected).is_ok()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_vector() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// A secret without the `whsec_` prefix is keyed with its own bytes.
    #[test]
    fn plain_secrets_sign_with_their_bytes() {
        let plain = Secret::new("a-secret-of-16-chars");
        let mut m = mac(b"a-secret-of-16-chars");
        m.update(b"id.1.{}");
        let expected = format!("v1,{}", BASE64.encode(m.finalize().into_bytes()));
        assert_eq!(plain.sign("id", 1, b"{}"), expected);
    }

    #[test]
    fn inbound_signatures() {
        let body = br#"{"a":1}"#;
        let secret = Secret::new("a-secret-of-16-chars");
        let mut m = mac(b"a-secret-of-16-chars");
        m.update(body);
        let good = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
        assert!(secret.verify_inbound(&good, body));
        assert!(!Secret::new("another-secret-16ch").verify_inbound(&good, body));
        assert!(!secret.verify_inbound(&good, b"{}"));
        assert!(!secret.verify_inbound("sha256=zz", body));
        assert!(!secret.verify_inbound(&good[7..], body));
    }

    #[test]
    fn generated_secrets_decode_to_24_bytes() {
        let s = Secret::generate();
        assert!(s.expose().starts_with(SECRET_PREFIX));
        assert_eq!(s.key.len(), 24);
        assert_ne!(s, Secret::generate());
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let shown = format!("{s:?} {s} {:?}", Some(&s));
        assert!(!shown.contains("MfKQ"), "{shown}");
        assert!(!shown.contains("LaSw"), "{shown}");
        assert_eq!(format!("{s}"), "****");
    }

    #[test]
    fn masked_keeps_the_last_four_characters() {
        assert_eq!(Secret::new("whsec_abcdefgh1234").masked(), "****1234");
        assert_eq!(Secret::new("abc").masked(), "****abc");
        assert_eq!(Secret::new("sécrèt-ünïcødé").masked(), "****cødé");
    }
}
