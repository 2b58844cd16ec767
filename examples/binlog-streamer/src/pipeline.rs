//! The worker's loop: source -> decoder -> encoder -> batches -> sink -> checkpoint.
//!
//! Two threads. The *reader* pulls events from the source, decodes and encodes them and
//! hands the messages over in chunks, each marked with the position it is safe to resume
//! from once it is delivered. A chunk ends at a transaction boundary when the source has
//! nothing more buffered (so a quiet stream is never held back), or at 512 rows: handing
//! over every transaction separately cost a third of a core in channel wake-ups. The *publisher*
//! (the caller's thread) gathers chunks into a batch until `batch_size` messages or
//! `linger` since the batch's first message, whichever comes first, publishes it,
//! retrying until the sink acknowledges, and only then writes the checkpoint. Resuming
//! from a checkpoint can repeat rows of the transaction that was open, never skip one.
//!
//! Both threads label their CPU for the profiler ([`crate::labels`]): the reader decodes
//! and encodes each rows event under `table`, `db` and `op`, the publisher publishes
//! under `sink`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::decode::{event_type_name, DecodeError, Decoded, RowDecoder};
use crate::encode::{EncodeError, MessageBuf, MessageEncoder, MessageFormat};
use crate::labels::TableLabels;
use crate::metrics::WorkerMetrics;
use crate::position::{BinlogPosition, Checkpoint, CheckpointError, CheckpointFile};
use crate::sink::{Sink, SinkError};
use crate::source::{EventSource, SourceError};

/// Most messages the reader puts in one chunk.
const CHUNK_ROWS: usize = 512;

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Publish once this many messages are waiting.
    pub batch_size: usize,
    /// Publish once the oldest waiting message has waited this long.
    pub linger: Duration,
    /// Message encoding.
    pub format: MessageFormat,
    /// Skip events of unknown or unsupported types instead of stopping.
    pub skip_unknown: bool,
    /// Where to store the position after each acknowledged batch.
    pub checkpoint: Option<CheckpointFile>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            batch_size: 3000,
            linger: Duration::from_millis(50),
            format: MessageFormat::Json,
            skip_unknown: false,
            checkpoint: None,
        }
    }
}

/// Why the pipeline stopped with an error. The checkpoint is left at the last
/// acknowledged batch.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An event could not be decoded.
    #[error("{file}:{pos}: {event}: {source}{hint}")]
    Decode {
        /// File.
        file: String,
        /// Offset of the event.
        pos: u64,
        /// The event's type name.
        event: String,
        /// What went wrong.
        source: DecodeError,
        /// A hint about `--skip-unknown`, when it applies.
        hint: &'static str,
    },
    /// A row could not be encoded.
    #[error("{file}:{pos}: {source}")]
    Encode {
        /// File.
        file: String,
        /// Offset of the event.
        pos: u64,
        /// Cause.
        source: EncodeError,
    },
    /// The sink kept failing and the worker was asked to stop.
    #[error("publishing: {0}")]
    Sink(#[from] SinkError),
    /// The checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// What a run did, for the exit line.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Row change messages acknowledged by the sink.
    pub events: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Median latency (seconds), when anything was published.
    pub p50: Option<f64>,
    /// 99th percentile latency (seconds).
    pub p99: Option<f64>,
    /// The last checkpoint written.
    pub checkpoint: Option<BinlogPosition>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.seconds > 0.0 {
            self.events as f64 / self.seconds
        } else {
            0.0
        };
        let ms = |v: Option<f64>| match v {
            Some(s) => format!("{:.0} ms", s * 1000.0),
            None => "n/a".into(),
        };
        write!(
            f,
            "binlog-streamer: {} events in {:.1} s ({:.0} events/s, {} batches), latency p50 {} p99 {}, checkpoint {}",
            self.events,
            self.seconds,
            rate,
            self.batches,
            ms(self.p50),
            ms(self.p99),
            self.checkpoint
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "none".into())
        )
    }
}

/// A run of messages plus the resume point once they (and all before them) are acked.
struct Chunk {
    messages: MessageBuf,
    event_time: u32,
    safe: Option<(BinlogPosition, Option<String>)>,
}

/// Runs until the source ends, `stop` is set (then flushes what was read), or an error.
pub fn run(
    source: Box<dyn EventSource>,
    sink: Box<dyn Sink>,
    opts: PipelineOptions,
    metrics: Arc<WorkerMetrics>,
    stop: Arc<AtomicBool>,
) -> Result<Summary, PipelineError> {
    let began = Instant::now();
    let (tx, rx) = sync_channel::<Result<Chunk, PipelineError>>(64);
    let reader = {
        let metrics = metrics.clone();
        let stop = stop.clone();
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("binlog-reader".into())
            .spawn(move || read_loop(source, &opts, &metrics, &stop, &tx))
            .expect("spawning the reader thread")
    };
    let mut publisher = Publisher::new(sink, &opts, metrics.clone(), stop.clone())?;
    let result = publisher.run(&rx);
    if result.is_ok() || !stop.load(Relaxed) {
        // The reader exits once the channel is gone; a reader blocked on a quiet server
        // is left behind only when stopping, and the process is about to exit then.
        drop(rx);
        if !stop.load(Relaxed) {
            let _ = reader.join();
        }
    }
    result?;
    Ok(Summary {
        events: publisher.published,
        batches: publisher.batches,
        seconds: began.elapsed().as_secs_f64(),
        p50: metrics.latency.quantile(0.5),
        p99: metrics.latency.quantile(0.99),
        checkpoint: publisher.checkpointed.map(|c| c.position),
    })
}

fn read_loop(
    mut source: Box<dyn EventSource>,
    opts: &PipelineOptions,
    metrics: &WorkerMetrics,
    stop: &AtomicBool,
    tx: &SyncSender<Result<Chunk, PipelineError>>,
) {
    let mut decoder = RowDecoder::new();
    let mut encoder = MessageEncoder::new(opts.format);
    let mut labels = TableLabels::new();
    let mut in_tx = false;
    let mut gtid: Option<String> = None;
    let mut pending = Chunk {
        messages: MessageBuf::new(),
        event_time: 0,
        safe: None,
    };
    let mut events = 0u64;
    let send = |chunk: &mut Chunk| -> bool {
        // The next chunk starts with the room this one needed: growing a buffer of
        // hundreds of kilobytes by doubling copied it a dozen times per chunk.
        let (n, bytes) = (chunk.messages.len(), chunk.messages.bytes());
        let c = std::mem::replace(
            chunk,
            Chunk {
                messages: MessageBuf::with_capacity(n.max(16), bytes.max(4096)),
                event_time: 0,
                safe: None,
            },
        );
        tx.send(Ok(c)).is_ok()
    };
    loop {
        if stop.load(Relaxed) {
            break;
        }
        let ev = match source.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return;
            }
        };
        events += 1;
        if events.is_multiple_of(1024) {
            metrics.binlog_events.fetch_add(1024, Relaxed);
        }
        // A rows event is decoded and encoded under its table's labels (one atomic
        // store each way); handing the chunk over below is not the table's work.
        let table_labels = decoder
            .rows_event_table(&ev.event)
            .map(|(id, table, kind)| labels.for_rows(id, table, kind).enter());
        let decoded = decoder.decode(&ev.event, &ev.file, ev.pos);
        let mut safe_here = false;
        match decoded {
            Ok(Decoded::Rows {
                changes,
                statement_end,
            }) => {
                metrics
                    .rows_decoded
                    .fetch_add(changes.len() as u64, Relaxed);
                pending.event_time = ev.event.header().timestamp();
                for change in &changes {
                    if let Err(source) = encoder.encode(change, &mut pending.messages) {
                        let _ = tx.send(Err(PipelineError::Encode {
                            file: ev.file.to_string(),
                            pos: ev.pos,
                            source,
                        }));
                        return;
                    }
                    if pending.messages.len() >= CHUNK_ROWS && !send(&mut pending) {
                        return;
                    }
                }
                safe_here = !in_tx && statement_end;
            }
            Ok(Decoded::TransactionStart { gtid: g }) => {
                in_tx = true;
                if g.is_some() {
                    gtid = g;
                }
            }
            Ok(Decoded::TransactionEnd) => {
                in_tx = false;
                safe_here = true;
            }
            Ok(Decoded::Rotate { fake, .. }) => safe_here = !fake && !in_tx,
            Ok(Decoded::Ignored) => {}
            Err(e) if opts.skip_unknown && e.skippable() => {
                warn!(file = %ev.file, pos = ev.pos, error = %e, "skipping event (--skip-unknown)");
                metrics.events_skipped.fetch_add(1, Relaxed);
            }
            Err(source) => {
                let hint = if source.skippable() {
                    " (--skip-unknown skips such events)"
                } else {
                    ""
                };
                let _ = tx.send(Err(PipelineError::Decode {
                    file: ev.file.to_string(),
                    pos: ev.pos,
                    event: event_type_name(ev.event.header().event_type_raw()),
                    source,
                    hint,
                }));
                return;
            }
        }
        drop(table_labels);
        if safe_here {
            // For a rotate the source already moved on: resume at the new file's start.
            let at = match decoded_rotate_target(&ev) {
                Some(p) => p,
                None => BinlogPosition::new(ev.file.to_string(), ev.end),
            };
            pending.safe = Some((at, gtid.clone()));
            let more_now = source.has_buffered_event() && !stop.load(Relaxed);
            if (!more_now || pending.messages.len() >= CHUNK_ROWS) && !send(&mut pending) {
                return;
            }
        }
    }
    metrics.binlog_events.fetch_add(events % 1024, Relaxed);
    if (!pending.messages.is_empty() || pending.safe.is_some()) && !send(&mut pending) {
        debug!("publisher gone before the last chunk");
    }
}

fn decoded_rotate_target(ev: &crate::source::SourceEvent) -> Option<BinlogPosition> {
    use mysql_common::binlog::consts::EventType;
    use mysql_common::binlog::events::RotateEvent;
    if ev.event.header().event_type_raw() != EventType::ROTATE_EVENT as u8 {
        return None;
    }
    let r = ev.event.read_event::<RotateEvent<'_>>().ok()?;
    Some(BinlogPosition::new(r.name().into_owned(), r.position()))
}

struct Publisher {
    sink: Box<dyn Sink>,
    /// `sink=<kind>`, current while publishing.
    sink_labels: stackwatch::LabelSet,
    batch_size: usize,
    linger: Duration,
    checkpoint_file: Option<CheckpointFile>,
    metrics: Arc<WorkerMetrics>,
    stop: Arc<AtomicBool>,
    batch: Vec<MessageBuf>,
    times: Vec<(u32, u64)>,
    batch_len: usize,
    batch_started: Option<Instant>,
    safe: Option<(BinlogPosition, Option<String>)>,
    checkpointed: Option<Checkpoint>,
    published: u64,
    batches: u64,
    rows_acked_base: u64,
    window_start: Instant,
    window_count: u64,
}

impl Publisher {
    fn new(
        sink: Box<dyn Sink>,
        opts: &PipelineOptions,
        metrics: Arc<WorkerMetrics>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, PipelineError> {
        let checkpointed = match &opts.checkpoint {
            Some(f) => f.load()?,
            None => None,
        };
        Ok(Self {
            sink_labels: crate::labels::sink_set(sink.kind()),
            sink,
            batch_size: opts.batch_size.max(1),
            linger: opts.linger,
            checkpoint_file: opts.checkpoint.clone(),
            metrics,
            stop,
            batch: Vec::new(),
            times: Vec::new(),
            batch_len: 0,
            batch_started: None,
            safe: None,
            rows_acked_base: checkpointed.as_ref().map(|c| c.rows_acked).unwrap_or(0),
            checkpointed,
            published: 0,
            batches: 0,
            window_start: Instant::now(),
            window_count: 0,
        })
    }

    fn run(&mut self, rx: &Receiver<Result<Chunk, PipelineError>>) -> Result<(), PipelineError> {
        loop {
            if self.stop.load(Relaxed) {
                // Flush what the reader already handed over, then stop.
                while let Ok(item) = rx.try_recv() {
                    self.add(item?);
                }
                return self.flush();
            }
            let wait = match self.batch_started {
                Some(t) => self.linger.saturating_sub(t.elapsed()),
                None => Duration::from_millis(100),
            };
            match rx.recv_timeout(wait) {
                Ok(Ok(chunk)) => {
                    self.add(chunk);
                    if self.batch_len >= self.batch_size {
                        self.flush()?;
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {
                    let due = self
                        .batch_started
                        .is_some_and(|t| t.elapsed() >= self.linger);
                    if due || self.batch_len == 0 {
                        // A due batch, or only positions moved (quiet tables): both flush.
                        self.flush()?;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return self.flush(),
            }
            self.tick_throughput();
        }
    }

    fn add(&mut self, chunk: Chunk) {
        if !chunk.messages.is_empty() {
            if self.batch_started.is_none() {
                self.batch_started = Some(Instant::now());
            }
            self.batch_len += chunk.messages.len();
            self.times
                .push((chunk.event_time, chunk.messages.len() as u64));
            self.batch.push(chunk.messages);
        }
        if chunk.safe.is_some() {
            self.safe = chunk.safe;
        }
    }

    fn flush(&mut self) -> Result<(), PipelineError> {
        if self.batch_len > 0 {
            let mut backoff = Duration::from_millis(100);
            let _labels = self.sink_labels.enter();
            loop {
                match self.sink.publish(&self.batch) {
                    Ok(()) => break,
                    Err(e) => {
                        self.metrics.sink_errors.fetch_add(1, Relaxed);
                        if self.stop.load(Relaxed) {
                            return Err(e.into());
                        }
                        warn!(error = %e, retry_in = ?backoff, "publish failed; retrying the batch");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            for &(t, n) in &self.times {
                self.metrics.latency.observe_n(now - t as f64, n);
            }
            let bytes: usize = self.batch.iter().map(MessageBuf::bytes).sum();
            let n = self.batch_len as u64;
            self.published += n;
            self.batches += 1;
            self.window_count += n;
            self.metrics.rows_published.fetch_add(n, Relaxed);
            self.metrics.batches_published.fetch_add(1, Relaxed);
            self.metrics
                .bytes_published
                .fetch_add(bytes as u64, Relaxed);
            self.batch.clear();
            self.times.clear();
            self.batch_len = 0;
            self.batch_started = None;
        }
        self.store_checkpoint()
    }

    fn store_checkpoint(&mut self) -> Result<(), PipelineError> {
        let Some((position, gtid)) = self.safe.clone() else {
            return Ok(());
        };
        let cp = Checkpoint {
            position,
            gtid,
            rows_acked: self.rows_acked_base + self.published,
        };
        if self.checkpointed.as_ref() == Some(&cp) {
            return Ok(());
        }
        if let Some(f) = &self.checkpoint_file {
            f.store(&cp)?;
            self.metrics.checkpoints.fetch_add(1, Relaxed);
            debug!(position = %cp.position, "checkpoint");
        }
        self.metrics.checkpoint_pos.store(cp.position.pos, Relaxed);
        self.checkpointed = Some(cp);
        Ok(())
    }

    fn tick_throughput(&mut self) {
        let elapsed = self.window_start.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let rate = self.window_count as f64 / elapsed.as_secs_f64();
            self.metrics.throughput.store(rate as u64, Relaxed);
            self.window_start = Instant::now();
            self.window_count = 0;
            if self.published > 0 {
                debug!(rate, published = self.published, "throughput");
            }
        }
    }
}

/// Logs where a run starts, in one place for every source.
pub fn log_start(what: &str, at: Option<&BinlogPosition>) {
    match at {
        Some(p) => info!(source = what, position = %p, "starting"),
        None => info!(source = what, "starting"),
    }
}
