//! The lines of a connection file: the metadata line, then entries (bytes, gaps, the
//! connection's identity as it became known, its close). See docs/record-format.md.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Serialize};
use taskless_http::Flow;

use crate::{
    capture::{DataRecord, Record},
    flows::Identity,
};

/// The first line of a connection file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// Always [`super::FORMAT`].
    pub format: String,
    /// The format version ([`super::VERSION`], or an older one this agent still reads).
    pub version: u32,
    /// The process id.
    pub pid: u32,
    /// The process name.
    pub comm: String,
    /// The connection key (the `SSL *`), as `0x…` hex.
    pub conn: String,
    /// Unix ns minus `CLOCK_MONOTONIC` ns when the recording was made.
    pub unix_offset_ns: i64,
}

/// One line after the metadata, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Line {
    t: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<Flow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gap: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<Identity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    close: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lost: Option<bool>,
}

/// One recorded moment of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Bytes that went one way.
    Data {
        /// `CLOCK_MONOTONIC` ns.
        t: u64,
        /// Which way, relative to the observed process.
        dir: Flow,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Bytes that went one way but were not captured.
    Gap {
        /// `CLOCK_MONOTONIC` ns.
        t: u64,
        /// Which way.
        dir: Flow,
        /// How many.
        len: u64,
    },
    /// From here on the connection's identity is this (format version 2).
    Identity {
        /// `CLOCK_MONOTONIC` ns: that of the entry it came with.
        t: u64,
        /// The whole identity (not a change to the previous one). Files written before it
        /// carried the pid and process name have them from the header line.
        source: Identity,
    },
    /// The connection ended.
    Close {
        /// `CLOCK_MONOTONIC` ns.
        t: u64,
    },
    /// Records of the connection were lost here, in an unknown amount and direction (the ring
    /// buffer was full): the parser resynchronises (format version 3).
    Lost {
        /// `CLOCK_MONOTONIC` ns.
        t: u64,
    },
}

impl Entry {
    /// The timestamp.
    #[must_use]
    pub const fn t(&self) -> u64 {
        match self {
            Self::Data { t, .. }
            | Self::Gap { t, .. }
            | Self::Identity { t, .. }
            | Self::Close { t }
            | Self::Lost { t } => *t,
        }
    }

    /// The JSON line.
    #[must_use]
    pub fn to_json(&self) -> String {
        let line = match self {
            Self::Data { t, dir, data } => Line {
                t: *t,
                dir: Some(*dir),
                data: Some(BASE64.encode(data)),
                ..Line::default()
            },
            Self::Gap { t, dir, len } => Line {
                t: *t,
                dir: Some(*dir),
                gap: Some(*len),
                ..Line::default()
            },
            Self::Identity { t, source } => Line {
                t: *t,
                source: Some(source.clone()),
                ..Line::default()
            },
            Self::Close { t } => Line {
                t: *t,
                close: Some(true),
                ..Line::default()
            },
            Self::Lost { t } => Line {
                t: *t,
                lost: Some(true),
                ..Line::default()
            },
        };
        // Numbers, strings and addresses always serialize.
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Parses one JSON line.
    ///
    /// # Errors
    /// A description of what is wrong with it.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if line.lost == Some(true) {
            return match (line.dir, line.data, line.gap, line.source, line.close) {
                (None, None, None, None, None) => Ok(Self::Lost { t: line.t }),
                _ => Err("lost:true comes alone".into()),
            };
        }
        match (line.dir, line.data, line.gap, line.source, line.close) {
            (Some(dir), Some(data), None, None, None) => Ok(Self::Data {
                t: line.t,
                dir,
                data: BASE64
                    .decode(data.as_bytes())
                    .map_err(|e| format!("data is not base64: {e}"))?,
            }),
            (Some(dir), None, Some(len), None, None) => Ok(Self::Gap {
                t: line.t,
                dir,
                len,
            }),
            (None, None, None, Some(source), None) => Ok(Self::Identity { t: line.t, source }),
            (None, None, None, None, Some(true)) => Ok(Self::Close { t: line.t }),
            _ => Err(
                "expected exactly one of dir+data, dir+gap, source, close:true or lost:true".into(),
            ),
        }
    }

    /// The entries one captured record is stored as: its bytes and, when part of the call was
    /// not captured, a gap of the same size the flows stage would report for it. A server name
    /// record is stored through the identity it gives its connection, not by itself.
    #[must_use]
    pub fn from_record(record: &Record) -> Vec<Self> {
        match record {
            Record::Close { timestamp_ns, .. } => vec![Self::Close { t: *timestamp_ns }],
            Record::ServerName { .. } => Vec::new(),
            // The writer turns a socket close into its connection's close; process events are
            // not part of any connection.
            Record::FdClose { .. } | Record::CodeChanged { .. } | Record::Socket { .. } => {
                Vec::new()
            }
            Record::Data(d) => {
                let (t, dir) = (d.timestamp_ns, d.direction);
                let mut v = Vec::new();
                if d.lost_before {
                    v.push(Self::Lost { t });
                }
                if d.read_failed {
                    let len = u64::from(d.total_len.saturating_sub(d.offset))
                        .min(agent_common::data::MAX_CHUNK as u64);
                    v.push(Self::Gap { t, dir, len });
                    return v;
                }
                if !d.payload.is_empty() {
                    v.push(Self::Data {
                        t,
                        dir,
                        data: d.payload.clone(),
                    });
                }
                if d.truncated {
                    let end = u64::from(d.offset) + d.payload.len() as u64;
                    let len = u64::from(d.total_len).saturating_sub(end);
                    v.push(Self::Gap { t, dir, len });
                }
                v
            }
        }
    }

    /// The record capture would have delivered for this entry on connection `(pid, conn)`;
    /// `None` for an identity entry, which is no record. A gap becomes an empty, truncated
    /// piece of a call of `len` bytes, which the flows stage reports to the parser as exactly
    /// `len` lost bytes; a loss, an empty piece that says records were lost before it. Data
    /// records carry no fd: the flows stage then looks nothing up, and
    /// the identity comes from the recording's identity entries.
    #[must_use]
    pub fn to_record(&self, pid: u32, conn: u64) -> Option<Record> {
        let data = |t, dir: Flow, payload: Vec<u8>, total_len, truncated| DataRecord {
            tgid: pid,
            tid: pid,
            conn,
            timestamp_ns: t,
            fd: -1,
            fd_fallback: false,
            direction: dir,
            offset: 0,
            total_len,
            truncated,
            read_failed: false,
            lost_before: false,
            payload,
        };
        match self {
            Self::Data { t, dir, data: d } => {
                let len = u32::try_from(d.len()).unwrap_or(u32::MAX);
                Some(Record::Data(data(*t, *dir, d.clone(), len, false)))
            }
            Self::Gap { t, dir, len } => Some(Record::Data(data(
                *t,
                *dir,
                Vec::new(),
                u32::try_from(*len).unwrap_or(u32::MAX),
                true,
            ))),
            Self::Identity { .. } => None,
            Self::Lost { t } => Some(Record::Data(DataRecord {
                lost_before: true,
                ..data(*t, Flow::Egress, Vec::new(), 0, false)
            })),
            Self::Close { t } => Some(Record::Close {
                tgid: pid,
                conn,
                timestamp_ns: *t,
            }),
        }
    }
}
