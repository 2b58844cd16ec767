//! [`ClickHouseStore`]: profiles in ClickHouse, for fleets that outgrow one machine.
//!
//! Several collectors and query nodes share one ClickHouse (a node or a cluster). The
//! schema and why its keys are what they are: [`schema`]; the HTTP client: `client`;
//! ingest, queries, rollups and retention, and collector membership each in a file of
//! their own. Everything is computed by ClickHouse (merges, rollups, series); Rust sees
//! only bounded answers.
//!
//! Exactly once without transactions: every row is a deterministic function of the
//! window it comes from, keyed so that a copy has the same key, and every read uses
//! `FINAL`; the checkpoint is written after the samples. docs/protocol.md has the
//! argument in full.

mod client;
mod ingest;
mod membership;
mod query;
mod retention;
mod rollup;
pub mod schema;

pub(crate) use crate::buckets::{floor_to, labels_key};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) use client::tsv_field;
use client::{quote, rows, Client};
use stackwatch_profile::Profile;

use crate::{
    BucketedStacks, Checkpoint, CollectorBeat, GroupedSeries, IngestStats, IngestWindow,
    Interruption, LabelKeys, Labels, ProfileReader, ProfileWriter, QueryGuard, RetentionStats,
    Selector, StoreError, StoreOptions, TargetSeries,
};

/// Where the ClickHouse store is and how to use it (`[store]` with
/// `kind = "clickhouse"`).
#[derive(Debug, Clone)]
pub struct ClickHouseOptions {
    /// The HTTP interface of the node this process talks to (`http://host:8123`).
    pub url: String,
    /// Database (must exist).
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// Cluster name from ClickHouse's `remote_servers`: tables are created on every
    /// node and read through `Distributed` tables.
    pub cluster: Option<String>,
    /// With `cluster`: the HTTP interface of every node of the cluster (tables are
    /// created, and retention applied, node by node; ClickHouse's `ON CLUSTER` would
    /// need ZooKeeper). Empty: only `url`.
    pub shard_urls: Vec<String>,
    /// Longest a statement may take (queries also stop at their own deadline).
    pub timeout: Duration,
    /// Retention of each resolution.
    pub retention: StoreOptions,
    /// Distinct stacks one answer may hold; the rest fold into `[other]`.
    pub max_answer_stacks: usize,
}

impl Default for ClickHouseOptions {
    fn default() -> Self {
        ClickHouseOptions {
            url: "http://127.0.0.1:8123".into(),
            database: "stackwatch".into(),
            user: "default".into(),
            password: String::new(),
            cluster: None,
            shard_urls: Vec::new(),
            timeout: Duration::from_secs(30),
            retention: StoreOptions::default(),
            max_answer_stacks: 100_000,
        }
    }
}

impl ClickHouseOptions {
    /// Options from `clickhouse://user:password@host:port/database` (the port of
    /// ClickHouse's HTTP interface, default 8123; `http://` works too: no TLS).
    pub fn from_url(text: &str) -> Result<ClickHouseOptions, StoreError> {
        let bad = |why: String| StoreError::Config { key: "url", why };
        let rest = text
            .strip_prefix("clickhouse://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| {
                bad(format!(
                    "{text:?} is not clickhouse://user:password@host:port/database"
                ))
            })?;
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if hostport.is_empty() {
            return Err(bad(format!("{text:?} has no host")));
        }
        let hostport = if hostport.contains(':') && !hostport.ends_with(']') {
            hostport.to_string()
        } else {
            format!("{hostport}:8123")
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (percent_decode(user), percent_decode(pass)),
                None => (percent_decode(u), String::new()),
            },
            None => ("default".to_string(), String::new()),
        };
        let database = database.trim_matches('/');
        Ok(ClickHouseOptions {
            url: format!("http://{hostport}"),
            database: if database.is_empty() {
                "stackwatch".into()
            } else {
                database.to_string()
            },
            user: if user.is_empty() {
                "default".into()
            } else {
                user
            },
            password,
            ..ClickHouseOptions::default()
        })
    }
}

/// `%XX` escapes of a URL's user or password back to text.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Profiles in ClickHouse (see the module docs).
pub struct ClickHouseStore {
    client: Client,
    /// Every node (one per shard), for DDL and retention.
    nodes: Vec<Client>,
    db: String,
    cluster: Option<String>,
    opts: ClickHouseOptions,
    guard: Option<QueryGuard>,
    /// Stack hash -> the day (days since 1970) its text was last written.
    stack_days: HashMap<u64, i64>,
    /// Label set hash -> the day its text was last written.
    label_days: HashMap<u64, i64>,
    /// Target id -> (day last written, period).
    target_days: HashMap<u64, (i64, u64)>,
    /// Every checkpoint, read at once and shared by the handles of one store.
    checkpoints: Arc<Mutex<Option<CheckpointTable>>>,
}

/// Every checkpoint by target id, and when it was read.
type CheckpointTable = (Instant, HashMap<u64, Vec<Checkpoint>>);

/// How long the checkpoint table read at once serves lookups. A stale checkpoint is
/// behind what is stored, never ahead: the scraper asks the worker for a few windows
/// again, and `FINAL` counts them once. 10 000 targets starting up ask one query, not
/// 10 000.
const CHECKPOINTS_FRESH: Duration = Duration::from_secs(2);

/// Stack hashes remembered before the cache is cleared.
const STACK_CACHE_LIMIT: usize = 1_000_000;

impl ClickHouseStore {
    /// Connects, checks the server (reachable, credentials, version, database,
    /// cluster) and creates or migrates the schema. Every failure names the
    /// `[store]` key to fix.
    pub fn open(opts: ClickHouseOptions) -> Result<ClickHouseStore, StoreError> {
        if opts.database.is_empty()
            || !opts
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Config {
                key: "database",
                why: format!(
                    "{:?} is not a plain name (letters, digits, _)",
                    opts.database
                ),
            });
        }
        if let Some(c) = &opts.cluster {
            if c.is_empty()
                || !c
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(StoreError::Config {
                    key: "cluster",
                    why: format!("{c:?} is not a plain name"),
                });
            }
        }
        let client = Client::new(&opts.url, &opts.user, &opts.password, opts.timeout)?;
        let version = client
            .query("SELECT version()", Some(Duration::from_secs(10)))
            .map_err(|e| startup_error(e, &opts))?;
        check_version(version.trim())?;
        let exists = client.query(
            &format!(
                "SELECT count() FROM system.databases WHERE name = {}",
                quote(&opts.database)
            ),
            None,
        )?;
        if exists.trim() != "1" {
            return Err(StoreError::Config {
                key: "database",
                why: format!(
                    "database {} does not exist on {} (create it: CREATE DATABASE {})",
                    opts.database, opts.url, opts.database
                ),
            });
        }
        let mut nodes = vec![client.clone()];
        if let Some(cluster) = &opts.cluster {
            let shards = client.query(
                &format!(
                    "SELECT count(DISTINCT shard_num) FROM system.clusters WHERE cluster = {}",
                    quote(cluster)
                ),
                None,
            )?;
            let shards: usize = shards.trim().parse().unwrap_or(0);
            if shards == 0 {
                return Err(StoreError::Config {
                    key: "cluster",
                    why: format!(
                        "{} knows no cluster {cluster:?} (see its remote_servers)",
                        opts.url
                    ),
                });
            }
            if !opts.shard_urls.is_empty() {
                if opts.shard_urls.len() != shards {
                    return Err(StoreError::Config {
                        key: "shard_urls",
                        why: format!(
                            "{} URLs for cluster {cluster:?}, which has {shards} shards: list one HTTP URL per shard",
                            opts.shard_urls.len()
                        ),
                    });
                }
                nodes = opts
                    .shard_urls
                    .iter()
                    .map(|u| {
                        Client::new(u, &opts.user, &opts.password, opts.timeout).map_err(
                            |e| match e {
                                StoreError::Config { why, .. } => StoreError::Config {
                                    key: "shard_urls",
                                    why,
                                },
                                e => e,
                            },
                        )
                    })
                    .collect::<Result<_, _>>()?;
            } else if shards > 1 {
                return Err(StoreError::Config {
                    key: "shard_urls",
                    why: format!(
                        "cluster {cluster:?} has {shards} shards: list each one's HTTP URL"
                    ),
                });
            }
        }
        let store = ClickHouseStore {
            client,
            nodes,
            db: opts.database.clone(),
            cluster: opts.cluster.clone(),
            opts,
            guard: None,
            stack_days: HashMap::new(),
            label_days: HashMap::new(),
            target_days: HashMap::new(),
            checkpoints: Arc::new(Mutex::new(None)),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Another handle on the same store for queries (no caches), bounded by `guard`.
    pub fn reader(&self, guard: Option<QueryGuard>) -> ClickHouseStore {
        ClickHouseStore {
            client: self.client.clone(),
            nodes: self.nodes.clone(),
            db: self.db.clone(),
            cluster: self.cluster.clone(),
            opts: self.opts.clone(),
            guard,
            stack_days: HashMap::new(),
            label_days: HashMap::new(),
            target_days: HashMap::new(),
            checkpoints: self.checkpoints.clone(),
        }
    }

    /// Brings the schema to [`schema::SCHEMA_VERSION`] on every node: a new database
    /// gets [`schema::TABLES`], an older one the steps of every later migration (a new
    /// one runs them too, where they find nothing to do: a database whose creation was
    /// interrupted before `meta` was written may hold tables of any older version).
    fn migrate(&self) -> Result<(), StoreError> {
        let stored = self.schema_version()?;
        if stored > schema::SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: stored as i64,
                supported: schema::SCHEMA_VERSION as i64,
            });
        }
        if stored == schema::SCHEMA_VERSION {
            return Ok(());
        }
        if stored == 0 {
            for t in schema::TABLES {
                self.create_table(t)?;
            }
        }
        for m in schema::MIGRATIONS {
            if m.version <= stored {
                continue;
            }
            for step in m.steps {
                match step {
                    schema::Step::Create(t) => self.create_table(t)?,
                    schema::Step::AddColumn {
                        table,
                        column,
                        stored,
                        distributed,
                    } => {
                        let local = schema::stored_table(table, self.cluster.as_deref());
                        for node in &self.nodes {
                            self.add_column(node, &local, column, stored)?;
                            if self.cluster.is_some() {
                                self.add_column(node, table, column, distributed)?;
                            }
                        }
                    }
                }
            }
            if stored > 0 {
                self.write_version(m.version)?;
                tracing::info!(version = m.version, database = %self.db, "clickhouse schema migrated");
            }
        }
        if stored == 0 {
            self.write_version(schema::SCHEMA_VERSION)?;
            tracing::info!(version = schema::SCHEMA_VERSION, database = %self.db, "clickhouse schema created");
        }
        Ok(())
    }

    /// Creates table `t` where it is missing, on every node.
    fn create_table(&self, t: &schema::TableDef) -> Result<(), StoreError> {
        let stmts = schema::create_statements(&self.db, t, self.cluster.as_deref());
        for node in &self.nodes {
            for s in &stmts {
                node.query(s, None)?;
            }
        }
        Ok(())
    }

    /// `ALTER TABLE table {alter}` on `node` unless `table` has `column` already (18.16
    /// knows no `ADD COLUMN IF NOT EXISTS`). A collector migrating at the same time may
    /// add it first: a failure is an error only if the column is still missing.
    fn add_column(
        &self,
        node: &Client,
        table: &str,
        column: &str,
        alter: &str,
    ) -> Result<(), StoreError> {
        let has = || -> Result<bool, StoreError> {
            let n = node.query(
                &format!(
                    "SELECT count() FROM system.columns WHERE database = {} AND table = {} AND name = {}",
                    quote(&self.db),
                    quote(table),
                    quote(column)
                ),
                None,
            )?;
            Ok(n.trim() != "0")
        };
        if has()? {
            return Ok(());
        }
        match node.query(&format!("ALTER TABLE {}.{table} {alter}", self.db), None) {
            Ok(_) => Ok(()),
            Err(e) if !e.is_transient() && has()? => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records schema version `version` in `meta`.
    fn write_version(&self, version: u64) -> Result<(), StoreError> {
        self.client.insert(
            &format!("{}.meta (key, value)", self.db),
            "TabSeparated",
            format!("schema_version\t{version}\n").into_bytes(),
        )
    }

    /// The stored schema version (0: no schema yet).
    fn schema_version(&self) -> Result<u64, StoreError> {
        let has_meta = self
            .client
            .query(&format!("EXISTS TABLE {}.meta", self.db), None)?;
        if has_meta.trim() != "1" {
            return Ok(0);
        }
        let v = self.client.query(
            &format!(
                "SELECT max(value) FROM {}.meta WHERE key = 'schema_version'",
                self.db
            ),
            None,
        )?;
        Ok(v.trim().parse().unwrap_or(0))
    }

    /// Runs a read, within the guard's deadline (and not at all once it is cancelled).
    fn read(&self, sql: &str) -> Result<String, StoreError> {
        let timeout = match &self.guard {
            Some(g) => {
                if g.cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(StoreError::Interrupted(Interruption::ClientGone));
                }
                let left = g.deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(StoreError::Interrupted(Interruption::Timeout));
                }
                left.min(self.opts.timeout)
            }
            None => self.opts.timeout,
        };
        self.client.query(sql, Some(timeout)).map_err(|e| match e {
            StoreError::Unavailable(why)
                if why.contains("timed out") || why.contains("Timeout") =>
            {
                if self.guard.is_some() {
                    StoreError::Interrupted(Interruption::Timeout)
                } else {
                    StoreError::Unavailable(why)
                }
            }
            e => e,
        })
    }

    /// Inserts TabSeparated `body` into `table (cols)` (nothing when empty).
    pub(crate) fn insert_rows(
        &self,
        table: &str,
        cols: &str,
        body: String,
    ) -> Result<(), StoreError> {
        if body.is_empty() {
            return Ok(());
        }
        self.client.insert(
            &format!("{} ({cols})", self.t(table)),
            "TabSeparated",
            body.into_bytes(),
        )
    }

    /// Takes over the rollup progress of a copied store: on a store with none yet, the
    /// copy's (its rollups are complete up to there); on a live one, the buckets the
    /// live store has rolled up past the copy's progress are recomputed for the copied
    /// targets, so the copied raw rows are in them.
    pub(crate) fn adopt_rollups(
        &self,
        minute_done: Option<i64>,
        hour_done: Option<i64>,
        targets: &[(u64, String)],
    ) -> Result<(), StoreError> {
        let l = self.levels()?;
        for (step, copied, started, level) in [
            (60, minute_done, l.minute_started, "1m"),
            (3600, hour_done, l.hour_started, "1h"),
        ] {
            let Some(copied) = copied else { continue };
            if started == i64::MIN {
                self.set_level(&format!("{level}-started"), copied)?;
                self.set_level(level, copied)?;
                continue;
            }
            let mut from = floor_to(copied, step);
            while from < started && !targets.is_empty() {
                let to = (from + 3600 * 24).min(started);
                self.roll(step, from, to, Some(targets))?;
                from = to;
            }
        }
        Ok(())
    }

    /// Statement text of the table `name` in this store's database.
    fn t(&self, name: &str) -> String {
        format!("{}.{}", self.db, name)
    }
}

/// Startup errors that name a key: unreachable (`url`), refused credentials
/// (`user`/`password`).
fn startup_error(e: StoreError, opts: &ClickHouseOptions) -> StoreError {
    match e {
        StoreError::Unavailable(why) => StoreError::Config { key: "url", why },
        StoreError::ClickHouse {
            code: Some(192 | 193 | 194 | 516),
            message,
        } => StoreError::Config {
            key: "password",
            why: format!(
                "ClickHouse at {} refused user {:?}: {message}",
                opts.url, opts.user
            ),
        },
        StoreError::ClickHouse { code, message }
            if message.contains("HTTP 4") || code.is_none() =>
        {
            StoreError::Config {
                key: "url",
                why: format!(
                    "{} does not answer like ClickHouse's HTTP interface: {message}",
                    opts.url
                ),
            }
        }
        e => e,
    }
}

fn check_version(v: &str) -> Result<(), StoreError> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if (major, minor) < schema::MIN_CLICKHOUSE {
        return Err(StoreError::Config {
            key: "url",
            why: format!(
                "ClickHouse {v} is too old for the schema (needs {}.{} or later)",
                schema::MIN_CLICKHOUSE.0,
                schema::MIN_CLICKHOUSE.1
            ),
        });
    }
    Ok(())
}

/// A target's id: the xxh3-64 hash of its canonical label text.
pub(crate) fn target_id(labels: &Labels) -> u64 {
    xxhash_rust::xxh3::xxh3_64(labels_key(labels).as_bytes())
}

/// A stack's id: the xxh3-64 hash of its text.
pub(crate) fn stack_hash(stack: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(stack.as_bytes())
}

/// A sample label set's id (the `labels` column): the xxh3-64 hash of its canonical
/// text, never 0, which stands for the samples without labels (the empty set).
pub(crate) fn label_set_hash(labels: &stackwatch_profile::SampleLabels) -> u64 {
    if labels.is_empty() {
        return 0;
    }
    let text = stackwatch_profile::labels::format_labels(labels);
    xxhash_rust::xxh3::xxh3_64(text.as_bytes()).max(1)
}

/// A worker instance id's hash (the `inst` column).
pub(crate) fn instance_hash(instance: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(instance.as_bytes())
}

impl ProfileReader for ClickHouseStore {
    fn checkpoints(&self, target: &Labels) -> Result<Vec<Checkpoint>, StoreError> {
        let mut cache = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = matches!(&*cache, Some((at, _)) if at.elapsed() < CHECKPOINTS_FRESH);
        if !fresh {
            let text = self.read(&format!(
                "SELECT target, inst, max(last_seq) AS s, toUInt32(max(updated)) AS u FROM {} GROUP BY target, inst",
                self.t("series")
            ))?;
            let mut all: HashMap<u64, Vec<Checkpoint>> = HashMap::new();
            for r in rows(&text).0 {
                all.entry(client::num(r.first(), "target")?)
                    .or_default()
                    .push(Checkpoint {
                        instance: client::tsv_unescape(r.get(1).copied().unwrap_or("")),
                        last_seq: client::num(r.get(2), "last_seq")?,
                        updated_unix_s: client::num(r.get(3), "updated")?,
                    });
            }
            *cache = Some((Instant::now(), all));
        }
        let mut cps = cache
            .as_ref()
            .and_then(|(_, all)| all.get(&target_id(target)).cloned())
            .unwrap_or_default();
        cps.sort_by(|a, b| {
            b.updated_unix_s
                .cmp(&a.updated_unix_s)
                .then(b.last_seq.cmp(&a.last_seq))
        });
        Ok(cps)
    }

    fn targets(&self) -> Result<Vec<Labels>, StoreError> {
        let mut all: Vec<(String, Labels)> = self
            .target_rows()?
            .into_iter()
            .map(|(_, labels, _)| (labels_key(&labels), labels))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(_, l)| l).collect())
    }

    fn profile(&self, selector: &Selector, from_s: i64, to_s: i64) -> Result<Profile, StoreError> {
        self.merged_profile(selector, from_s, to_s)
    }

    fn target_series(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<TargetSeries>, StoreError> {
        self.series_by_target(selector, from_s, to_s, step_s)
    }

    fn bucketed_stacks(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<BucketedStacks, StoreError> {
        self.stacks_by_bucket(selector, from_s, to_s, step_s)
    }

    fn label_keys(&self) -> Result<LabelKeys, StoreError> {
        let targets = self.target_rows()?;
        let sets = self.label_set_rows()?;
        Ok(crate::buckets::label_keys_of(
            targets.iter().map(|t| &t.1),
            sets.iter().map(|(_, l)| l),
        ))
    }

    fn label_values(&self, name: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let targets: Vec<Labels> = self.target_rows()?.into_iter().map(|t| t.1).collect();
        crate::buckets::label_values_of(name, limit, &targets, || {
            Ok(self.label_set_rows()?.into_iter().map(|(_, l)| l).collect())
        })
    }

    fn sample_label_sets(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<stackwatch_profile::SampleLabels>, StoreError> {
        self.label_sets_used(selector, from_s, to_s)
    }

    fn grouped_series(
        &self,
        selector: &Selector,
        from_s: i64,
        to_s: i64,
        step_s: i64,
        group_by: &str,
        limit: usize,
    ) -> Result<Vec<GroupedSeries>, StoreError> {
        self.series_grouped(selector, from_s, to_s, step_s, group_by, limit)
    }

    fn live_collectors(&self, since_ms: u64) -> Result<Vec<CollectorBeat>, StoreError> {
        self.collectors_since(since_ms)
    }
}

impl ProfileWriter for ClickHouseStore {
    fn ingest(&mut self, windows: &[IngestWindow]) -> Result<IngestStats, StoreError> {
        self.ingest_windows(windows)
    }

    fn check_window(&self, window: &IngestWindow, now_s: i64) -> Result<(), StoreError> {
        // A window older than the raw retention would be rolled up from a partial
        // minute (the rest of it is gone): refused instead of replacing a good rollup.
        let earliest =
            now_s.saturating_sub(self.opts.retention.raw_retention.as_secs() as i64) + 3600;
        crate::check_window_bounds(
            window,
            earliest,
            now_s.saturating_add(crate::MAX_FUTURE_S),
            "older than the raw retention",
        )
    }

    fn rollup(&mut self, now_s: i64) -> Result<bool, StoreError> {
        let more_m = self.rollup_minutes(now_s)?;
        let more_h = self.rollup_hours(now_s)?;
        Ok(more_m || more_h)
    }

    fn apply_retention(&mut self, now_s: i64) -> Result<RetentionStats, StoreError> {
        let r = self.drop_expired(now_s);
        self.stack_days.clear();
        self.label_days.clear();
        self.target_days.clear();
        r
    }

    fn heartbeat(&mut self, me: &CollectorBeat) -> Result<(), StoreError> {
        self.beat(me)
    }
}

#[cfg(test)]
mod tests {
    use super::ClickHouseOptions;

    #[test]
    fn a_store_url_gives_host_database_and_unescaped_credentials() {
        let o = ClickHouseOptions::from_url(
            "clickhouse://ops%40team:p%3Ass%2Fw%C3%B6rd@ch1:9000/profiles",
        )
        .unwrap();
        assert_eq!(o.url, "http://ch1:9000");
        assert_eq!(o.database, "profiles");
        assert_eq!(o.user, "ops@team");
        assert_eq!(o.password, "p:ss/wörd");
        // A stray `%` stays as written.
        let o = ClickHouseOptions::from_url("clickhouse://u:100%@ch1").unwrap();
        assert_eq!((o.user.as_str(), o.password.as_str()), ("u", "100%"));
        assert_eq!(o.url, "http://ch1:8123");
        assert_eq!(o.database, "stackwatch");
    }
}
