//! SPDY/3.1, server side: the multiplexing layer under Kubernetes' `SPDY/3.1` upgrade.
//!
//! Written from the SPDY Protocol Draft 3.1 (chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1);
//! no code is taken from other implementations. The facts used:
//!
//! * Every frame has an 8-byte header. Control frames: `1 | version (15) | type (16)`, then
//!   `flags (8) | length (24)`; the version is 3 (3.1 is "represented as version 3"). Data frames:
//!   `0 | stream ID (31)`, then `flags (8) | length (24)`; DATA's only flag is FLAG_FIN (0x01).
//! * Control frame types: SYN_STREAM 1 (stream ID, associated-to ID, 3-bit priority, slot, header
//!   block; flags FIN 0x01 and UNIDIRECTIONAL 0x02), SYN_REPLY 2 (stream ID, header block), RST_STREAM
//!   3 (stream ID, status; length 8), SETTINGS 4 (count, then `flags (8) | ID (24)`, value),
//!   PING 6 (32-bit ID; length 4), GOAWAY 7 (last-good-stream ID, status; length 8), HEADERS 8,
//!   WINDOW_UPDATE 9 (stream ID, 0 for the connection, and a delta of 1 to 2^31-1; length 8).
//!   Type 10 (CREDENTIAL) is deprecated; unknown control types are skipped here.
//! * The name/value header block (SYN_STREAM, SYN_REPLY, HEADERS) is a 32-bit count, then 32-bit
//!   length-prefixed lower-case names and values (several values joined by NUL), compressed with
//!   zlib (RFC 1950) seeded with the draft's 1423-byte dictionary, one zlib stream per direction
//!   per connection, a SYNC_FLUSH after each block. Decompression failures are session errors; a
//!   bad block that decompressed fine is a stream error.
//! * Client streams have odd IDs that increase; a second SYN_STREAM for an ID is an error; RST_STREAM
//!   statuses 1-11 (PROTOCOL_ERROR … FRAME_TOO_LARGE); GOAWAY statuses 0 OK, 1 PROTOCOL_ERROR,
//!   2 INTERNAL_ERROR; a session error sends GOAWAY and closes the transport.
//! * Flow control (3.1): a 64 KiB initial window per stream and for the connection, counted on DATA
//!   payloads only, opened by WINDOW_UPDATE, `SETTINGS_INITIAL_WINDOW_SIZE` (ID 7) shifts every
//!   stream's window; a window above 2^31-1 is an error. Server PINGs use even IDs; a client's odd
//!   PING is echoed.
//!
//! And what Kubernetes' clients do (moby/spdystream under k8s.io's httpstream/spdy, read only):
//! they open every stream (`streamType` error/stdin/stdout/stderr/resize, or port-forward's
//! `data`/`error` with `port` and `requestID`) and wait for its SYN_REPLY; they half-close with an
//! empty DATA+FIN; they never send WINDOW_UPDATE and ignore ours. Hence [`Config::honor_peer_window`]
//! (off for them) and a receive side that tolerates a peer overrunning its window: instead of
//! resetting, the connection stops reading the transport while a stream's unread data is above
//! [`Config::stream_buffer`] (TCP backpressure, bounded memory).
//!
//! Layout: [`frame`] (frame encoding/decoding with limits), [`header`] (the dictionary and the
//! compressed name/value block), [`conn`] (the connection, its driver and the streams).

pub mod conn;
pub mod frame;
pub mod header;

#[cfg(test)]
mod tests;

pub use conn::{ConnHandle, SpdyConn, SpdyStream, StreamAcceptor};
pub use frame::{Frame, GoAwayStatus, RstStatus};
pub use header::Headers;

use crate::error::{ErrorKind, Kind};

/// The initial stream and connection flow-control window of SPDY/3.1 (64 KiB).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// The largest window SPDY allows (2^31 - 1).
pub const MAX_WINDOW: i64 = 0x7fff_ffff;

/// Limits and behaviour of one connection. [`Config::default`] follows the draft; Kubernetes'
/// clients need [`Config::kubernetes`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest control-frame payload accepted (the draft requires at least 8192).
    pub max_control_frame: usize,
    /// Largest DATA payload accepted.
    pub max_data_frame: usize,
    /// Largest name/value block after decompression.
    pub max_header_block: usize,
    /// Streams the peer may have open at once (a stream counts until its handle is dropped);
    /// more are refused with RST_STREAM REFUSED_STREAM.
    pub max_streams: usize,
    /// Unread bytes a stream may buffer before the connection stops reading the transport.
    pub stream_buffer: usize,
    /// Bytes queued for the transport before writers wait and the reader pauses.
    pub max_pending_write: usize,
    /// Largest DATA payload sent.
    pub max_send_frame: usize,
    /// Whether sending waits for the peer's flow-control windows. The draft says yes; Kubernetes'
    /// SPDY client never opens a window, so with it this must be off or output stalls at 64 KiB.
    pub honor_peer_window: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_control_frame: 64 * 1024,
            max_data_frame: 1024 * 1024,
            max_header_block: 64 * 1024,
            max_streams: 128,
            stream_buffer: DEFAULT_WINDOW as usize,
            max_pending_write: 256 * 1024,
            max_send_frame: 32 * 1024,
            honor_peer_window: true,
        }
    }
}

impl Config {
    /// The draft's limits, but sending ignores the peer's windows (moby/spdystream never sends
    /// WINDOW_UPDATE).
    pub fn kubernetes() -> Self {
        Config {
            honor_peer_window: false,
            ..Config::default()
        }
    }
}

/// Errors of the SPDY layer: malformed or hostile input, and the connection's fate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SPDY: unsupported version {0} (only 3 is spoken)")]
    UnsupportedVersion(u16),
    #[error("SPDY {frame} frame: length {len} above the limit of {limit}")]
    FrameTooLarge {
        frame: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("SPDY {frame} frame: length {len}, expected {expected}")]
    BadLength {
        frame: &'static str,
        len: usize,
        expected: &'static str,
    },
    #[error("SPDY {frame} frame: flags {flags:#04x} must be 0")]
    BadFlags { frame: &'static str, flags: u8 },
    #[error("SPDY {frame} frame: stream ID 0 is not valid")]
    ZeroStreamId { frame: &'static str },
    #[error("SPDY {frame} frame: {reason}")]
    InvalidFrame {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("SPDY header block: decompresses to more than {limit} bytes")]
    HeaderBlockTooLarge { limit: usize },
    #[error("SPDY header block: zlib: {0}")]
    Compression(String),
    #[error("SPDY header block of stream {stream_id}: {reason}")]
    InvalidHeaderBlock {
        stream_id: u32,
        reason: &'static str,
    },
    #[error("SPDY: header {0:?} is not a valid lower-case name")]
    InvalidHeaderName(String),
    #[error("SPDY: SYN_STREAM {id} is not above the last stream ID {last}")]
    StreamIdNotIncreasing { id: u32, last: u32 },
    #[error("SPDY: SYN_STREAM {0} from the client must have an odd ID")]
    EvenStreamId(u32),
    #[error("SPDY: second SYN_STREAM for stream {0}")]
    DuplicateStream(u32),
    #[error("SPDY: connection flow-control window above 2^31-1")]
    WindowOverflow,
    #[error("SPDY: SETTINGS_INITIAL_WINDOW_SIZE {0} above 2^31-1")]
    BadInitialWindow(u32),
    #[error("SPDY transport: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY transport closed in the middle of a frame")]
    UnexpectedEof,
    #[error("SPDY connection closed")]
    Closed,
}

impl Error {
    /// The RST_STREAM to answer with when this is an error of one stream, not of the session.
    pub fn stream_error(&self) -> Option<(u32, RstStatus)> {
        match self {
            Error::InvalidHeaderBlock { stream_id, .. } => {
                Some((*stream_id, RstStatus::ProtocolError))
            }
            Error::DuplicateStream(id) => Some((*id, RstStatus::ProtocolError)),
            _ => None,
        }
    }
}

impl ErrorKind for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Io(_) | Error::UnexpectedEof | Error::Closed => Kind::Unavailable,
            Error::Compression(_) => Kind::DataLoss,
            _ => Kind::InvalidArgument,
        }
    }
}
