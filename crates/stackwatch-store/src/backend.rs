//! Which backend a collector uses, opened from its configuration: the writer the
//! ingest thread owns, and the readers queries borrow.

use std::ops::Deref;
use std::path::PathBuf;

use crate::{
    ClickHouseOptions, ClickHouseStore, PooledReader, ProfileReader, ProfileWriter, QueryGuard,
    ReaderOptions, ReaderPool, SqliteStore, StoreError, StoreOptions,
};

/// Where profiles are stored (`[store]` in `stackwatch.toml`).
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One SQLite file (the embedded default).
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// Retention.
        options: StoreOptions,
        /// Settings of read-only connections.
        reader: ReaderOptions,
        /// Read connections kept for reuse.
        max_idle_readers: usize,
    },
    /// ClickHouse (a node or a cluster), shared by several collectors.
    ClickHouse(ClickHouseOptions),
}

impl StoreConfig {
    /// True when several collectors may write to the store at once (they split the
    /// targets between them); false for the embedded store, which one collector locks.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreConfig::ClickHouse(_))
    }

    /// A one-line description for logs (no credentials).
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite { path, .. } => format!("sqlite {}", path.display()),
            StoreConfig::ClickHouse(o) => match &o.cluster {
                Some(c) => format!("clickhouse {} database {} cluster {c}", o.url, o.database),
                None => format!("clickhouse {} database {}", o.url, o.database),
            },
        }
    }
}

/// Opens the store for writing (creating or migrating its schema): the one the ingest
/// thread owns.
pub fn open_writer(cfg: &StoreConfig) -> Result<Box<dyn ProfileWriter + Send>, StoreError> {
    Ok(match cfg {
        StoreConfig::Sqlite { path, options, .. } => {
            Box::new(SqliteStore::open(path, options.clone())?)
        }
        StoreConfig::ClickHouse(o) => Box::new(ClickHouseStore::open(o.clone())?),
    })
}

/// Read handles for queries: pooled read-only SQLite connections, or ClickHouse
/// handles sharing one HTTP connection pool.
#[derive(Clone)]
pub struct Readers(Kind);

#[derive(Clone)]
enum Kind {
    Sqlite(ReaderPool),
    ClickHouse(std::sync::Arc<ClickHouseStore>),
}

impl Readers {
    /// Readers of the store `cfg` describes. The store must exist (open a writer first,
    /// which creates the schema); a ClickHouse store is checked here too.
    pub fn open(cfg: &StoreConfig) -> Result<Readers, StoreError> {
        Ok(Readers(match cfg {
            StoreConfig::Sqlite {
                path,
                reader,
                max_idle_readers,
                ..
            } => Kind::Sqlite(ReaderPool::new(
                path.clone(),
                reader.clone(),
                *max_idle_readers,
            )),
            StoreConfig::ClickHouse(o) => {
                Kind::ClickHouse(std::sync::Arc::new(ClickHouseStore::open(o.clone())?))
            }
        }))
    }

    /// A handle for one query, stopped by `guard`.
    pub fn get(&self, guard: Option<QueryGuard>) -> Result<Reader, StoreError> {
        Ok(Reader(match &self.0 {
            Kind::Sqlite(pool) => ReaderKind::Sqlite(pool.get(guard)?),
            Kind::ClickHouse(store) => ReaderKind::ClickHouse(store.reader(guard)),
        }))
    }
}

/// A store handle for one query (derefs to a [`ProfileReader`]).
pub struct Reader(ReaderKind);

enum ReaderKind {
    Sqlite(PooledReader),
    ClickHouse(ClickHouseStore),
}

impl Deref for Reader {
    type Target = dyn ProfileReader;

    fn deref(&self) -> &Self::Target {
        match &self.0 {
            ReaderKind::Sqlite(r) => &**r,
            ReaderKind::ClickHouse(s) => s,
        }
    }
}
