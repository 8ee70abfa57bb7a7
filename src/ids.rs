//! Id newtypes: a subscription id can never be passed where a webhook id is
//! expected, and path ids are parsed strictly (hyphenated form only).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for webhook ids derived from an `Idempotency-Key`.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_6a0e_8f0b_4c4e_9a53_1f0e_77b2_c3a1);

/// Parses the canonical hyphenated, 36-character form and nothing else
/// (no braces, no `urn:uuid:`, no simple form), so every id has one spelling.
fn parse_strict(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id (UUIDv7: creation order is index order).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses an id from a URL path or header: hyphenated form only.
            pub fn parse(s: &str) -> Option<Self> {
                parse_strict(s).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifies a subscription (target URL, secret, event filter).
    SubscriptionId
);
id_type!(
    /// Identifies one accepted webhook across its attempts; sent to receivers
    /// as `webhook-id` and to JetStream as `Nats-Msg-Id`.
    WebhookId
);

impl WebhookId {
    /// The id a webhook gets when its sender names an `Idempotency-Key`: the
    /// same subscription and key always give the same id, so JetStream's
    /// duplicate window drops a repeated post.
    pub fn from_idempotency_key(subscription: SubscriptionId, key: &str) -> Self {
        let mut name = Vec::with_capacity(16 + key.len());
        name.extend_from_slice(subscription.0.as_bytes());
        name.extend_from_slice(key.as_bytes());
        Self(Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        let id = SubscriptionId::new();
        assert_eq!(SubscriptionId::parse(&id.to_string()), Some(id));
        assert!(SubscriptionId::parse("not-a-uuid").is_none());
        assert!(SubscriptionId::parse(&id.0.simple().to_string()).is_none());
        assert!(SubscriptionId::parse(&format!("{{{id}}}")).is_none());
        assert!(SubscriptionId::parse(&format!("urn:uuid:{id}")).is_none());
    }

    #[test]
    fn idempotency_ids_are_stable_and_scoped() {
        let a = SubscriptionId::new();
        let b = SubscriptionId::new();
        let k1 = WebhookId::from_idempotency_key(a, "order-1");
        assert_eq!(k1, WebhookId::from_idempotency_key(a, "order-1"));
        assert_ne!(k1, WebhookId::from_idempotency_key(a, "order-2"));
        assert_ne!(k1, WebhookId::from_idempotency_key(b, "order-1"));
    }

    #[test]
    fn new_ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..100).map(|_| WebhookId::new().to_string()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
