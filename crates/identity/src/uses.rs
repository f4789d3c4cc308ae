//! Last use, kept in memory on the request path and written to the store
//! in batches: no disk write per request, and nothing lost on a clean
//! shutdown (the caller flushes once more after the proxy drained).

use std::collections::HashMap;
use std::sync::Mutex;

/// Key -> (last use, written to the store yet?). The lock is held for a
/// map lookup or update, never across I/O.
pub struct Uses<K> {
    book: Mutex<HashMap<K, (i64, bool)>>,
}

impl<K> Default for Uses<K> {
    fn default() -> Self {
        Uses {
            book: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Uses<K> {
    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<K, (i64, bool)>> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last use seen here, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<i64>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.book().get(key).map(|(t, _)| *t)
    }

    /// A use at `at`; allocates only the first time a key is seen.
    pub fn note<Q>(&self, key: &Q, at: i64)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut b = self.book();
        if let Some(e) = b.get_mut(key) {
            if at > e.0 {
                *e = (at, false);
            }
            return;
        }
        b.insert(key.to_owned(), (at, false));
    }

    /// A use the store already holds (loaded at start or renewed there):
    /// kept if newer, and not written back.
    pub fn merge(&self, key: K, at: i64) {
        let mut b = self.book();
        let e = b.entry(key).or_insert((at, true));
        if at > e.0 {
            *e = (at, true);
        }
    }

    /// Uses not yet written, marked as written. On a failed write, give
    /// them back with [`Uses::unwritten`].
    pub fn take_unwritten(&self) -> Vec<(K, i64)> {
        let mut b = self.book();
        b.iter_mut()
            .filter(|(_, (_, written))| !*written)
            .map(|(k, (t, written))| {
                *written = true;
                (k.clone(), *t)
            })
            .collect()
    }

    /// Puts back uses whose write failed, unless a newer use came since.
    pub fn unwritten(&self, uses: Vec<(K, i64)>) {
        let mut b = self.book();
        for (k, t) in uses {
            if let Some(e) = b.get_mut(&k)
                && e.0 == t
            {
                e.1 = false;
            }
        }
    }

    /// Every use: (key, last use).
    pub fn all(&self) -> Vec<(K, i64)> {
        self.book()
            .iter()
            .map(|(k, (t, _))| (k.clone(), *t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_written_once_and_never_go_back() {
        let u: Uses<String> = Uses::default();
        u.note("web", 10);
        u.note("web", 5);
        assert_eq!(u.get("web"), Some(10));
        assert_eq!(u.take_unwritten(), vec![("web".to_string(), 10)]);
        assert!(u.take_unwritten().is_empty());
        u.note("web", 12);
        let batch = u.take_unwritten();
        u.unwritten(batch);
        assert_eq!(u.take_unwritten(), vec![("web".to_string(), 12)]);
        u.merge("web".into(), 20);
        assert_eq!(u.get("web"), Some(20));
        assert!(u.take_unwritten().is_empty(), "merged uses are the store's");
    }
}
