//! Signatures: Standard Webhooks on outgoing deliveries, GitHub-style
//! `sha256=<hex>` on incoming webhooks.
//!
//! Time is an argument, never read here, so tests pin known signatures.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of Standard Webhooks secrets (`whsec_<base64 key>`).
pub const SECRET_PREFIX: &str = "whsec_";

/// The HMAC key of a subscription secret: the decoded bytes of a
/// `whsec_<base64>` secret, or the secret's own bytes for any other form.
pub fn signing_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b64| BASE64.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

/// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">`.
pub fn sign(secret: &str, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(&signing_key(secret));
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
pub fn verify_inbound(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut m = mac(secret.as_bytes());
    m.update(body);
    m.verify_slice(&expected).is_ok()
}

/// `sha256=<hex>` for a body: what a sender puts in `X-Signature`.
pub fn inbound_signature(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret.as_bytes());
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// A new random `whsec_` secret (24 random bytes).
pub fn generate_secret() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&a.as_bytes()[..]);
    bytes.extend_from_slice(&b.as_bytes()[..8]);
    format!("{SECRET_PREFIX}{}", BASE64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_vector() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn inbound_signatures() {
        let body = br#"{"a":1}"#;
        let good = inbound_signature("a-secret-of-16-chars", body);
        assert!(verify_inbound("a-secret-of-16-chars", &good, body));
        assert!(!verify_inbound("another-secret-16ch", &good, body));
        assert!(!verify_inbound("a-secret-of-16-chars", &good, b"{}"));
        assert!(!verify_inbound("a-secret-of-16-chars", "sha256=zz", body));
        assert!(!verify_inbound("a-secret-of-16-chars", &good[7..], body));
    }

    #[test]
    fn generated_secrets_decode_to_24_bytes() {
        let s = generate_secret();
        assert!(s.starts_with(SECRET_PREFIX));
        assert_eq!(signing_key(&s).len(), 24);
        assert_ne!(s, generate_secret());
    }
}
