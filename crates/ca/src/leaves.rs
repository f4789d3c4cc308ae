//! The leaves shown to intercepted clients: minted on first use per name,
//! kept in a bounded LRU, and re-minted well before they expire.

use crate::{Ca, CaError};
use lru::LruCache;
use rustls::sign::CertifiedKey;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a minted leaf is valid, and how long it is served from the
/// cache: a client never sees one with less than half its life left.
const LEAF_TTL: Duration = Duration::from_secs(24 * 3600);
const CACHE_TTL: Duration = Duration::from_secs(12 * 3600);

/// A cached leaf and when it leaves the cache.
type Cached = (Arc<CertifiedKey>, Instant);

pub struct Leaves {
    ca: Ca,
    /// Name -> (leaf, when it leaves the cache). The lock is held for a
    /// lookup or an insert; minting happens outside it.
    cache: Mutex<LruCache<Box<str>, Cached>>,
}

impl Leaves {
    pub fn new(ca: Ca, capacity: usize) -> Leaves {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Leaves {
            ca,
            cache: Mutex::new(LruCache::new(cap)),
        }
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The leaf for `name`, minted if it is not cached or is stale.
    pub fn get(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let now = Instant::now();
        {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((leaf, until)) = c.get(name)
                && *until > now
            {
                return Ok(leaf.clone());
            }
        }
        let (chain, key) = self.ca.server_leaf(name, LEAF_TTL)?;
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CaError::Sign {
                name: name.to_string(),
                why: e.to_string(),
            })?;
        let leaf = Arc::new(CertifiedKey::new(chain, signer));
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.put(name.into(), (leaf.clone(), now + CACHE_TTL));
        Ok(leaf)
    }

    /// How many leaves are cached.
    pub fn len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
