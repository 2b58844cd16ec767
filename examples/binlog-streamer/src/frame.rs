//! Cutting a byte stream into binlog events, with their checksums verified.
//!
//! Every source that reads bytes (binlog files, `--follow`, the generator) goes through
//! [`EventFramer`]; the replication source gets whole events from the server and checks
//! them with [`verify_checksum`]. The framer validates the length field before
//! `mysql_common` sees an event: its reader assumes a well-formed header and a complete
//! event, and a half-written event at the end of a file being written must mean "wait for
//! more bytes", never a panic.

use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion, EventFlags, EventType};
use mysql_common::binlog::events::{BinlogEventFooter, Event, FormatDescriptionEvent};

/// Length of a v4 event header.
pub const HEADER_LEN: usize = 19;
/// Length of a CRC32 event checksum.
pub const CHECKSUM_LEN: usize = 4;
/// Largest event accepted (the server's `max_allowed_packet` ceiling, 1 GiB).
pub const MAX_EVENT_SIZE: usize = 1 << 30;
/// The four magic bytes at the start of every binlog file.
pub const BINLOG_MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];
/// Body length of a format description event up to its post-header lengths.
const FDE_FIXED_LEN: usize = 2 + 50 + 4 + 1;

/// Why bytes are not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is impossible.
    #[error("event length {size} is impossible (type {event_type}; minimum {min}, maximum {MAX_EVENT_SIZE})")]
    BadLength {
        /// The event's length field.
        size: usize,
        /// The event's type code.
        event_type: u8,
        /// The least length an event of this type can have.
        min: usize,
    },
    /// The stored checksum does not match the event's bytes.
    #[error("checksum mismatch on a type {event_type} event: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The event's type code.
        event_type: u8,
        /// Checksum written in the event.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// The format description names a checksum algorithm this reader does not know.
    #[error("unknown checksum algorithm {0}")]
    UnknownChecksum(u8),
    /// The event's header or format description did not parse.
    #[error("malformed type {event_type} event: {message}")]
    Malformed {
        /// The event's type code.
        event_type: u8,
        /// What the parser said.
        message: String,
    },
}

/// What [`EventFramer::frame`] found at the start of a buffer.
#[derive(Debug)]
pub enum Framed {
    /// A complete, verified event and how many bytes it took.
    Event(Box<Event>, usize),
    /// The buffer holds only part of an event (or nothing).
    NeedMore,
}

/// Splits bytes into events, tracking the format description (and so the checksum
/// algorithm) in force.
#[derive(Debug, Clone)]
pub struct EventFramer {
    fde: FormatDescriptionEvent<'static>,
    crc: bool,
}

impl Default for EventFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl EventFramer {
    /// A framer that has not yet seen a format description event.
    pub fn new() -> Self {
        Self {
            fde: FormatDescriptionEvent::new(BinlogVersion::Version4),
            crc: false,
        }
    }

    /// Whether events carry CRC32 checksums (known after the format description).
    pub fn checksums(&self) -> bool {
        self.crc
    }

    /// The event at the start of `buf`, or [`Framed::NeedMore`] when it is incomplete.
    pub fn frame(&mut self, buf: &[u8]) -> Result<Framed, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(Framed::NeedMore);
        }
        let event_type = buf[4];
        let size = u32::from_le_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize;
        let is_fde = event_type == EventType::FORMAT_DESCRIPTION_EVENT as u8;
        let min = if is_fde {
            HEADER_LEN + FDE_FIXED_LEN
        } else if self.crc {
            HEADER_LEN + CHECKSUM_LEN
        } else {
            HEADER_LEN
        };
        if size < min || size > MAX_EVENT_SIZE {
            return Err(FrameError::BadLength {
                size,
                event_type,
                min,
            });
        }
        if buf.len() < size {
            return Ok(Framed::NeedMore);
        }
        let raw = &buf[..size];
        let crc = if is_fde {
            fde_checksum_alg(raw)?
        } else {
            self.crc
        };
        if crc {
            verify_raw(raw, event_type, is_fde)?;
        }
        let malformed = |e: std::io::Error| FrameError::Malformed {
            event_type,
            message: e.to_string(),
        };
        let event = Event::read(&self.fde, raw).map_err(malformed)?;
        if is_fde {
            let fde = event
                .read_event::<FormatDescriptionEvent<'_>>()
                .map_err(malformed)?;
            self.fde = fde.into_owned().with_footer(event.footer());
            self.crc = crc;
        }
        Ok(Framed::Event(Box::new(event), size))
    }
}

/// Whether a raw format description event announces CRC32 checksums, decided exactly as
/// `mysql_common` will when it reads the event (servers before 5.6.1 write no algorithm
/// byte), so the framer and the parser never disagree about where the checksum is.
fn fde_checksum_alg(raw: &[u8]) -> Result<bool, FrameError> {
    let footer =
        BinlogEventFooter::read(&raw[HEADER_LEN..]).map_err(|e| FrameError::Malformed {
            event_type: EventType::FORMAT_DESCRIPTION_EVENT as u8,
            message: e.to_string(),
        })?;
    match footer.get_checksum_alg() {
        Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) => Err(FrameError::UnknownChecksum(e.0)),
    }
}

/// Checks the trailing CRC32 of a complete raw event.
fn verify_raw(raw: &[u8], event_type: u8, is_fde: bool) -> Result<(), FrameError> {
    let (body, stored) = raw.split_at(raw.len() - CHECKSUM_LEN);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let mut hasher = crc32fast::Hasher::new();
    if is_fde {
        // The server computes a format description's checksum with the "binlog in use"
        // flag cleared, because it clears that flag when it closes the file.
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&body[..HEADER_LEN]);
        let flags = u16::from_le_bytes([header[17], header[18]])
            & !EventFlags::LOG_EVENT_BINLOG_IN_USE_F.bits();
        header[17..19].copy_from_slice(&flags.to_le_bytes());
        hasher.update(&header);
        hasher.update(&body[HEADER_LEN..]);
    } else {
        hasher.update(body);
    }
    let computed = hasher.finalize();
    if computed != stored {
        return Err(FrameError::Checksum {
            event_type,
            stored,
            computed,
        });
    }
    Ok(())
}

/// Verifies the checksum of an event that arrived already framed (replication stream).
pub fn verify_checksum(event: &Event) -> Result<(), FrameError> {
    let event_type = event.header().event_type_raw();
    match event.footer().get_checksum_alg() {
        Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) => {
            if let Some(stored) = event.checksum() {
                let stored = u32::from_le_bytes(stored);
                let computed = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
                if stored != computed {
                    return Err(FrameError::Checksum {
                        event_type,
                        stored,
                        computed,
                    });
                }
            }
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(FrameError::UnknownChecksum(e.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_need_more_and_impossible_lengths_are_errors() {
        let mut f = EventFramer::new();
        assert!(matches!(f.frame(&[0u8; 10]).unwrap(), Framed::NeedMore));
        let mut header = [0u8; HEADER_LEN];
        header[4] = EventType::XID_EVENT as u8;
        header[9..13].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(
            f.frame(&header),
            Err(FrameError::BadLength { size: 3, .. })
        ));
        header[9..13].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(
            f.frame(&header),
            Err(FrameError::BadLength { .. })
        ));
        header[9..13].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(f.frame(&header).unwrap(), Framed::NeedMore));
    }
}
