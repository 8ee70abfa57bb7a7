//! Subscription cache: ingest and every delivery attempt look their
//! subscription up here instead of in SQLite.
//!
//! Bounded (quick_cache) with a TTL. Update and delete invalidate the entry
//! before the API answers. A load that raced with an invalidation is not
//! cached (a generation counter tells), so a worker never keeps using a
//! deleted or stale subscription after the API answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::ids::SubscriptionId;
use crate::store::subscriptions::Subscription;
use crate::store::{Store, StoreError};

/// A cached lookup: the subscription, or the fact that there is none.
#[derive(Clone)]
struct Entry {
    loaded_at: Instant,
    value: Option<Arc<Subscription>>,
}

/// Read-through cache of subscriptions; cheap to clone.
#[derive(Clone)]
pub struct SubscriptionCache {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache<SubscriptionId, Entry>,
    ttl: Duration,
    generation: AtomicU64,
    /// Makes "check the generation, then insert" and "bump, then remove"
    /// atomic with respect to each other. Taken on misses and writes only;
    /// hits never wait for it.
    writes: Mutex<()>,
    store: Store,
}

impl SubscriptionCache {
    /// A cache of at most `capacity` subscriptions, each trusted for `ttl`.
    pub fn new(store: Store, capacity: usize, ttl: Duration) -> Self {
        SubscriptionCache {
            inner: Arc::new(Inner {
                cache: Cache::new(capacity),
                ttl,
                generation: AtomicU64::new(0),
                writes: Mutex::new(()),
                store,
            }),
        }
    }

    /// The subscription with this id, from memory when fresh, else from SQLite.
    pub async fn get(&self, id: SubscriptionId) -> Result<Option<Arc<Subscription>>, StoreError> {
        if let Some(entry) = self.inner.cache.get(&id) {
            if entry.loaded_at.elapsed() < self.inner.ttl {
                return Ok(entry.value);
            }
        }
        let generation = self.inner.generation.load(Ordering::Acquire);
        let value = self.inner.store.subscription(id).await?.map(Arc::new);
        // An invalidation since the read started may mean `value` is stale:
        // answer it to this caller (it was read after the request began) but
        // do not keep it.
        let _writes = self.inner.writes.lock().unwrap_or_else(|e| e.into_inner());
        if self.inner.generation.load(Ordering::Acquire) == generation {
            self.inner.cache.insert(
                id,
                Entry {
                    loaded_at: Instant::now(),
                    value: value.clone(),
                },
            );
        }
        Ok(value)
    }

    /// Puts a subscription just written by the API in the cache.
    pub fn put(&self, sub: Subscription) {
        let _writes = self.inner.writes.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.inner.cache.insert(
            sub.id,
            Entry {
                loaded_at: Instant::now(),
                value: Some(Arc::new(sub)),
            },
        );
    }

    /// Forgets a subscription (after an update or delete).
    pub fn invalidate(&self, id: SubscriptionId) {
        let _writes = self.inner.writes.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.inner.cache.remove(&id);
    }
}
