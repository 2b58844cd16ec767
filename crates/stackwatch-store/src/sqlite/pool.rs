//! [`ReaderPool`]: read-only connections kept for reuse, so a query does not pay for
//! opening a connection and warming its page cache, and the number of caches (each up
//! to [`ReaderOptions::cache_kib`]) is bounded by the pool's size.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::{QueryGuard, ReaderOptions, SqliteStore, StoreError};

/// Idle read-only connections to one store.
#[derive(Clone)]
pub struct ReaderPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    path: PathBuf,
    opts: ReaderOptions,
    max_idle: usize,
    idle: Mutex<Vec<SqliteStore>>,
}

impl ReaderPool {
    /// A pool over the store at `path`, keeping at most `max_idle` connections.
    pub fn new(path: PathBuf, opts: ReaderOptions, max_idle: usize) -> Self {
        ReaderPool {
            inner: Arc::new(PoolInner {
                path,
                opts,
                max_idle,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A connection (an idle one, or a new one), bounded by `guard` until returned.
    pub fn get(&self, guard: Option<QueryGuard>) -> Result<PooledReader, StoreError> {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut store = match idle {
            Some(s) => s,
            None => SqliteStore::open_reader_with(&self.inner.path, self.inner.opts.clone())?,
        };
        store.set_guard(guard);
        Ok(PooledReader {
            store: Some(store),
            pool: self.inner.clone(),
        })
    }
}

/// A connection borrowed from a [`ReaderPool`]; goes back when dropped.
pub struct PooledReader {
    store: Option<SqliteStore>,
    pool: Arc<PoolInner>,
}

impl Deref for PooledReader {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        self.store.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledReader {
    fn deref_mut(&mut self) -> &mut SqliteStore {
        self.store.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledReader {
    fn drop(&mut self) {
        if let Some(mut store) = self.store.take() {
            store.set_guard(None);
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < self.pool.max_idle {
                idle.push(store);
            }
        }
    }
}
