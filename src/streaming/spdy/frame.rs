//! SPDY/3 frames: the 8-byte header, the payload of each frame type, and their limits.
//!
//! Decoding is two steps so a hostile length is refused before anything is read or allocated:
//! [`FrameHead::parse`] on the 8 header bytes (version and length checked against [`Limits`]),
//! then [`decode`] on exactly `head.len` payload bytes. Header blocks go through the connection's
//! [`HeaderDecoder`] / [`HeaderEncoder`], so frames must be decoded and encoded in wire order.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{HeaderDecoder, HeaderEncoder, Headers};
use super::Error;

/// The SPDY version in every control frame.
pub const VERSION: u16 = 3;

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes (draft 3.1, 2.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RstStatus {
    ProtocolError,
    InvalidStream,
    RefusedStream,
    UnsupportedVersion,
    Cancel,
    InternalError,
    FlowControlError,
    StreamInUse,
    StreamAlreadyClosed,
    FrameTooLarge,
    /// A code the draft does not define (not 0, which is invalid).
    Other(u32),
}

impl RstStatus {
    pub fn code(self) -> u32 {
        match self {
            RstStatus::ProtocolError => 1,
            RstStatus::InvalidStream => 2,
            RstStatus::RefusedStream => 3,
            RstStatus::UnsupportedVersion => 4,
            RstStatus::Cancel => 5,
            RstStatus::InternalError => 6,
            RstStatus::FlowControlError => 7,
            RstStatus::StreamInUse => 8,
            RstStatus::StreamAlreadyClosed => 9,
            RstStatus::FrameTooLarge => 11,
            RstStatus::Other(code) => code,
        }
    }

    pub fn from_code(code: u32) -> RstStatus {
        match code {
            1 => RstStatus::ProtocolError,
            2 => RstStatus::InvalidStream,
            3 => RstStatus::RefusedStream,
            4 => RstStatus::UnsupportedVersion,
            5 => RstStatus::Cancel,
            6 => RstStatus::InternalError,
            7 => RstStatus::FlowControlError,
            8 => RstStatus::StreamInUse,
            9 => RstStatus::StreamAlreadyClosed,
            11 => RstStatus::FrameTooLarge,
            other => RstStatus::Other(other),
        }
    }
}

/// GOAWAY status codes (draft 3.1, 2.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoAwayStatus {
    Ok,
    ProtocolError,
    InternalError,
    Other(u32),
}

impl GoAwayStatus {
    pub fn code(self) -> u32 {
        match self {
            GoAwayStatus::Ok => 0,
            GoAwayStatus::ProtocolError => 1,
            GoAwayStatus::InternalError => 2,
            GoAwayStatus::Other(code) => code,
        }
    }

    pub fn from_code(code: u32) -> GoAwayStatus {
        match code {
            0 => GoAwayStatus::Ok,
            1 => GoAwayStatus::ProtocolError,
            2 => GoAwayStatus::InternalError,
            other => GoAwayStatus::Other(other),
        }
    }
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded frame. Stream IDs and deltas are 31-bit; the reserved top bit is dropped on decode
/// and written as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        slot: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: RstStatus,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: GoAwayStatus,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type this layer does not handle (CREDENTIAL, NOOP, …): skipped.
    Unknown {
        frame_type: u16,
    },
}

/// Size limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_control_frame: usize,
    pub max_data_frame: usize,
}

/// The 8-byte header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHead {
    Control {
        frame_type: u16,
        flags: u8,
        len: usize,
    },
    Data {
        stream_id: u32,
        flags: u8,
        len: usize,
    },
}

impl FrameHead {
    /// Parses and checks the header: version 3 for control frames, lengths within `limits`.
    pub fn parse(bytes: [u8; 8], limits: &Limits) -> Result<FrameHead, Error> {
        let first = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let flags = bytes[4];
        let len = u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) as usize;
        if first & 0x8000_0000 != 0 {
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(Error::UnsupportedVersion(version));
            }
            let frame_type = (first & 0xffff) as u16;
            if len > limits.max_control_frame {
                return Err(Error::FrameTooLarge {
                    frame: type_name(frame_type),
                    len,
                    limit: limits.max_control_frame,
                });
            }
            Ok(FrameHead::Control {
                frame_type,
                flags,
                len,
            })
        } else {
            if len > limits.max_data_frame {
                return Err(Error::FrameTooLarge {
                    frame: "DATA",
                    len,
                    limit: limits.max_data_frame,
                });
            }
            Ok(FrameHead::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                len,
            })
        }
    }

    /// The payload length that follows the header.
    pub fn len(&self) -> usize {
        match self {
            FrameHead::Control { len, .. } | FrameHead::Data { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn type_name(frame_type: u16) -> &'static str {
    match frame_type {
        TYPE_SYN_STREAM => "SYN_STREAM",
        TYPE_SYN_REPLY => "SYN_REPLY",
        TYPE_RST_STREAM => "RST_STREAM",
        TYPE_SETTINGS => "SETTINGS",
        TYPE_PING => "PING",
        TYPE_GOAWAY => "GOAWAY",
        TYPE_HEADERS => "HEADERS",
        TYPE_WINDOW_UPDATE => "WINDOW_UPDATE",
        _ => "control",
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes the payload of the frame `head` announced. `payload` must be exactly `head.len()`
/// bytes. Header blocks are inflated by `headers` even when the frame is then refused, so the
/// zlib stream stays in step.
pub fn decode(
    head: FrameHead,
    payload: Bytes,
    headers: &mut HeaderDecoder,
) -> Result<Frame, Error> {
    debug_assert_eq!(payload.len(), head.len());
    let (frame_type, flags, len) = match head {
        FrameHead::Data {
            stream_id, flags, ..
        } => {
            if stream_id == 0 {
                return Err(Error::ZeroStreamId { frame: "DATA" });
            }
            return Ok(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            });
        }
        FrameHead::Control {
            frame_type,
            flags,
            len,
        } => (frame_type, flags, len),
    };
    let frame = type_name(frame_type);
    let p = &payload[..];
    let exact = |want: usize, expected: &'static str| {
        if len == want {
            Ok(())
        } else {
            Err(Error::BadLength {
                frame,
                len,
                expected,
            })
        }
    };
    let at_least = |want: usize, expected: &'static str| {
        if len >= want {
            Ok(())
        } else {
            Err(Error::BadLength {
                frame,
                len,
                expected,
            })
        }
    };
    let no_flags = || {
        if flags == 0 {
            Ok(())
        } else {
            Err(Error::BadFlags { frame, flags })
        }
    };
    let nonzero = |id: u32| {
        if id == 0 {
            Err(Error::ZeroStreamId { frame })
        } else {
            Ok(id)
        }
    };
    match frame_type {
        TYPE_SYN_STREAM => {
            at_least(10, "at least 10")?;
            let stream_id = be32(p) & 0x7fff_ffff;
            let associated_to = be32(&p[4..]) & 0x7fff_ffff;
            let priority = p[8] >> 5;
            let slot = p[9];
            let raw = headers.decompress(&p[10..])?;
            let stream_id = nonzero(stream_id)?;
            let headers = Headers::decode(&raw, stream_id)?;
            Ok(Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                fin: flags & FLAG_FIN != 0,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                headers,
            })
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            at_least(4, "at least 4")?;
            let stream_id = be32(p) & 0x7fff_ffff;
            let raw = headers.decompress(&p[4..])?;
            let stream_id = nonzero(stream_id)?;
            let headers = Headers::decode(&raw, stream_id)?;
            let fin = flags & FLAG_FIN != 0;
            Ok(if frame_type == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    fin,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    fin,
                    headers,
                }
            })
        }
        TYPE_RST_STREAM => {
            exact(8, "8")?;
            no_flags()?;
            let stream_id = nonzero(be32(p) & 0x7fff_ffff)?;
            let code = be32(&p[4..]);
            if code == 0 {
                return Err(Error::InvalidFrame {
                    frame,
                    reason: "status 0 is not valid",
                });
            }
            Ok(Frame::RstStream {
                stream_id,
                status: RstStatus::from_code(code),
            })
        }
        TYPE_SETTINGS => {
            at_least(4, "at least 4")?;
            let count = be32(p) as usize;
            if count > (len - 4) / 8 || len != 4 + count * 8 {
                return Err(Error::BadLength {
                    frame,
                    len,
                    expected: "4 + 8 per entry",
                });
            }
            let entries = p[4..]
                .chunks_exact(8)
                .map(|e| Setting {
                    flags: e[0],
                    id: be32(e) & 0x00ff_ffff,
                    value: be32(&e[4..]),
                })
                .collect();
            Ok(Frame::Settings {
                clear: flags & FLAG_SETTINGS_CLEAR != 0,
                entries,
            })
        }
        TYPE_PING => {
            exact(4, "4")?;
            no_flags()?;
            Ok(Frame::Ping { id: be32(p) })
        }
        TYPE_GOAWAY => {
            exact(8, "8")?;
            no_flags()?;
            Ok(Frame::GoAway {
                last_good_stream_id: be32(p) & 0x7fff_ffff,
                status: GoAwayStatus::from_code(be32(&p[4..])),
            })
        }
        TYPE_WINDOW_UPDATE => {
            exact(8, "8")?;
            no_flags()?;
            let delta = be32(&p[4..]) & 0x7fff_ffff;
            if delta == 0 {
                return Err(Error::InvalidFrame {
                    frame,
                    reason: "delta must be 1 to 2^31-1",
                });
            }
            Ok(Frame::WindowUpdate {
                stream_id: be32(p) & 0x7fff_ffff,
                delta,
            })
        }
        other => Ok(Frame::Unknown { frame_type: other }),
    }
}

/// A length or count for a 32-bit wire field. Every caller has checked it against the frame's
/// 24-bit limit ([`MAX_LEN`]); should one not have, it saturates instead of wrapping.
pub(super) fn wire_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn control(out: &mut BytesMut, frame_type: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    out.put_u32((u32::from(flags) << 24) | (wire_u32(len) & 0x00ff_ffff));
}

/// Appends the wire form of `frame` to `out`, compressing header blocks with `headers`.
/// Fails on a payload longer than the 24-bit length field allows, or on a frame this layer
/// never sends ([`Frame::Unknown`]).
pub fn encode(frame: &Frame, headers: &mut HeaderEncoder, out: &mut BytesMut) -> Result<(), Error> {
    const MAX_LEN: usize = 0x00ff_ffff;
    let too_large = |frame: &'static str, len: usize| Error::FrameTooLarge {
        frame,
        len,
        limit: MAX_LEN,
    };
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            slot,
            fin,
            unidirectional,
            headers: h,
        } => {
            let mut block = Vec::new();
            headers.encode(h, &mut block)?;
            let len = 10 + block.len();
            if len > MAX_LEN {
                return Err(too_large("SYN_STREAM", len));
            }
            let flags = if *fin { FLAG_FIN } else { 0 }
                | if *unidirectional {
                    FLAG_UNIDIRECTIONAL
                } else {
                    0
                };
            control(out, TYPE_SYN_STREAM, flags, len);
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(associated_to & 0x7fff_ffff);
            out.put_u8((priority & 0x07) << 5);
            out.put_u8(*slot);
            out.put_slice(&block);
        }
        Frame::SynReply {
            stream_id,
            fin,
            headers: h,
        }
        | Frame::Headers {
            stream_id,
            fin,
            headers: h,
        } => {
            let (frame_type, name) = if matches!(frame, Frame::SynReply { .. }) {
                (TYPE_SYN_REPLY, "SYN_REPLY")
            } else {
                (TYPE_HEADERS, "HEADERS")
            };
            let mut block = Vec::new();
            headers.encode(h, &mut block)?;
            let len = 4 + block.len();
            if len > MAX_LEN {
                return Err(too_large(name, len));
            }
            control(out, frame_type, if *fin { FLAG_FIN } else { 0 }, len);
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control(out, TYPE_RST_STREAM, 0, 8);
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(status.code());
        }
        Frame::Settings { clear, entries } => {
            let len = 4 + 8 * entries.len();
            if len > MAX_LEN {
                return Err(too_large("SETTINGS", len));
            }
            let flags = if *clear { FLAG_SETTINGS_CLEAR } else { 0 };
            control(out, TYPE_SETTINGS, flags, len);
            out.put_u32(wire_u32(entries.len()));
            for e in entries {
                out.put_u32(((e.flags as u32) << 24) | (e.id & 0x00ff_ffff));
                out.put_u32(e.value);
            }
        }
        Frame::Ping { id } => {
            control(out, TYPE_PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            control(out, TYPE_GOAWAY, 0, 8);
            out.put_u32(last_good_stream_id & 0x7fff_ffff);
            out.put_u32(status.code());
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(delta & 0x7fff_ffff);
        }
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            if data.len() > MAX_LEN {
                return Err(too_large("DATA", data.len()));
            }
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32((u32::from(if *fin { FLAG_FIN } else { 0 }) << 24) | wire_u32(data.len()));
            out.put_slice(data);
        }
        Frame::Unknown { .. } => {
            return Err(Error::InvalidFrame {
                frame: "control",
                reason: "unknown frames are never sent",
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_control_frame: 64 * 1024,
        max_data_frame: 1024 * 1024,
    };

    fn decode_all(bytes: &[u8], dec: &mut HeaderDecoder) -> Result<Frame, Error> {
        let head = FrameHead::parse(bytes[..8].try_into().unwrap(), &LIMITS)?;
        assert_eq!(head.len(), bytes.len() - 8, "test vector length");
        decode(head, Bytes::copy_from_slice(&bytes[8..]), dec)
    }

    fn roundtrip(frame: Frame) {
        let mut out = BytesMut::new();
        encode(&frame, &mut HeaderEncoder::new(), &mut out).unwrap();
        assert_eq!(
            decode_all(&out, &mut HeaderDecoder::new(65536)).unwrap(),
            frame
        );
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(frame, &mut HeaderEncoder::new(), &mut out).unwrap();
        out.to_vec()
    }

    // The vectors below are written from the draft's layouts: byte 0-1 `1|version 3` = 80 03,
    // byte 2-3 the type, byte 4 flags, bytes 5-7 the length.

    #[test]
    fn rst_stream_vector() {
        let wire = [
            0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, // RST_STREAM, length 8
            0x00, 0x00, 0x00, 0x05, // stream 5
            0x00, 0x00, 0x00, 0x05, // CANCEL
        ];
        let frame = Frame::RstStream {
            stream_id: 5,
            status: RstStatus::Cancel,
        };
        assert_eq!(encoded(&frame), wire);
        let mut dec = HeaderDecoder::new(1024);
        assert_eq!(decode_all(&wire, &mut dec).unwrap(), frame);
    }

    #[test]
    fn settings_vector() {
        let wire = [
            0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x14, // SETTINGS, length 20
            0x00, 0x00, 0x00, 0x02, // 2 entries
            0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x64, // MAX_CONCURRENT_STREAMS 100
            0x01, 0x00, 0x00, 0x07, 0x00, 0x01, 0x00,
            0x00, // PERSIST, INITIAL_WINDOW_SIZE 65536
        ];
        let frame = Frame::Settings {
            clear: false,
            entries: vec![
                Setting {
                    flags: 0,
                    id: SETTINGS_MAX_CONCURRENT_STREAMS,
                    value: 100,
                },
                Setting {
                    flags: 1,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 65536,
                },
            ],
        };
        assert_eq!(encoded(&frame), wire);
        assert_eq!(
            decode_all(&wire, &mut HeaderDecoder::new(1024)).unwrap(),
            frame
        );
    }

    #[test]
    fn ping_goaway_window_update_vectors() {
        let mut dec = HeaderDecoder::new(1024);
        let ping = [
            0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
        ];
        assert_eq!(decode_all(&ping, &mut dec).unwrap(), Frame::Ping { id: 1 });
        assert_eq!(encoded(&Frame::Ping { id: 1 }), ping);

        let goaway = [
            0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, // GOAWAY, length 8
            0x00, 0x00, 0x00, 0x07, // last good stream 7
            0x00, 0x00, 0x00, 0x01, // PROTOCOL_ERROR
        ];
        let frame = Frame::GoAway {
            last_good_stream_id: 7,
            status: GoAwayStatus::ProtocolError,
        };
        assert_eq!(decode_all(&goaway, &mut dec).unwrap(), frame);
        assert_eq!(encoded(&frame), goaway);

        let update = [
            0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, // WINDOW_UPDATE, length 8
            0x80, 0x00, 0x00, 0x00, // stream 0 (the connection), reserved bit set
            0x00, 0x00, 0x80, 0x00, // delta 32768
        ];
        assert_eq!(
            decode_all(&update, &mut dec).unwrap(),
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 32768
            }
        );
    }

    #[test]
    fn data_vectors() {
        let mut dec = HeaderDecoder::new(1024);
        let wire = [
            0x00, 0x00, 0x00, 0x03, // data frame, stream 3
            0x01, 0x00, 0x00, 0x02, // FIN, length 2
            b'h', b'i',
        ];
        let frame = Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::from_static(b"hi"),
        };
        assert_eq!(decode_all(&wire, &mut dec).unwrap(), frame);
        assert_eq!(encoded(&frame), wire);
        // An empty DATA+FIN is how Kubernetes' clients half-close.
        let fin = [0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00];
        assert_eq!(
            decode_all(&fin, &mut dec).unwrap(),
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new()
            }
        );
    }

    /// SYN_STREAM with the header block of `header::tests` (`streamtype: error`, made by C zlib).
    const SYN_STREAM: [u8; 48] = [
        0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x28, // SYN_STREAM, no flags, length 40
        0x00, 0x00, 0x00, 0x01, // stream 1
        0x00, 0x00, 0x00, 0x00, // associated to 0
        0x00, 0x00, // priority 0, slot 0
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
        0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];

    #[test]
    fn syn_stream_vector() {
        let mut dec = HeaderDecoder::new(1024);
        match decode_all(&SYN_STREAM, &mut dec).unwrap() {
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers,
                ..
            } => assert_eq!(headers.get("streamType"), Some("error")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syn_reply_layout() {
        let frame = Frame::SynReply {
            stream_id: 3,
            fin: false,
            headers: Headers::new(),
        };
        let wire = encoded(&frame);
        assert_eq!(&wire[..4], &[0x80, 0x03, 0x00, 0x02]);
        assert_eq!(wire[4], 0, "no flags");
        assert_eq!(
            u32::from_be_bytes([0, wire[5], wire[6], wire[7]]) as usize,
            wire.len() - 8
        );
        assert_eq!(&wire[8..12], &[0, 0, 0, 3]);
        let mut dec = HeaderDecoder::new(1024);
        assert_eq!(
            dec.decompress(&wire[12..]).unwrap(),
            [0, 0, 0, 0],
            "0 pairs"
        );
    }

    #[test]
    fn round_trips() {
        let mut h = Headers::new();
        h.insert("streamtype", "data").unwrap();
        h.insert("port", "80").unwrap();
        h.insert("requestid", "1").unwrap();
        roundtrip(Frame::SynStream {
            stream_id: 0x7fff_ffff,
            associated_to: 1,
            priority: 7,
            slot: 0,
            fin: true,
            unidirectional: true,
            headers: h.clone(),
        });
        roundtrip(Frame::SynReply {
            stream_id: 1,
            fin: true,
            headers: h.clone(),
        });
        roundtrip(Frame::Headers {
            stream_id: 9,
            fin: false,
            headers: h,
        });
        roundtrip(Frame::RstStream {
            stream_id: 3,
            status: RstStatus::Other(42),
        });
        roundtrip(Frame::Settings {
            clear: true,
            entries: vec![],
        });
        roundtrip(Frame::Ping { id: 0xffff_fffe });
        roundtrip(Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::Ok,
        });
        roundtrip(Frame::WindowUpdate {
            stream_id: 1,
            delta: 0x7fff_ffff,
        });
        roundtrip(Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![7u8; 70_000]),
        });
    }

    fn head_err(bytes: [u8; 8]) -> Error {
        FrameHead::parse(bytes, &LIMITS).unwrap_err()
    }

    #[test]
    fn bad_version_is_refused() {
        let err = head_err([0x80, 0x02, 0x00, 0x01, 0, 0, 0, 10]);
        assert!(matches!(err, Error::UnsupportedVersion(2)), "{err}");
    }

    #[test]
    fn oversized_lengths_are_refused_before_reading() {
        let err = head_err([0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff]);
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    frame: "SYN_STREAM",
                    len: 0xffffff,
                    ..
                }
            ),
            "{err}"
        );
        let err = head_err([0x00, 0x00, 0x00, 0x01, 0x00, 0x20, 0x00, 0x00]);
        assert!(
            matches!(err, Error::FrameTooLarge { frame: "DATA", .. }),
            "{err}"
        );
    }

    #[test]
    fn short_and_wrong_lengths_are_refused() {
        let mut dec = HeaderDecoder::new(1024);
        let cases: &[&[u8]] = &[
            // SYN_STREAM of 6 bytes
            &[0x80, 0x03, 0x00, 0x01, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0],
            // SYN_REPLY of 2 bytes
            &[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 2, 0, 0],
            // RST_STREAM of 4 bytes
            &[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1],
            // PING of 8 bytes
            &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 1],
            // GOAWAY of 4 bytes (SPDY/2's layout)
            &[0x80, 0x03, 0x00, 0x07, 0, 0, 0, 4, 0, 0, 0, 1],
            // WINDOW_UPDATE of 4 bytes
            &[0x80, 0x03, 0x00, 0x09, 0, 0, 0, 4, 0, 0, 0, 1],
            // SETTINGS claiming 2 entries with room for 1
            &[
                0x80, 0x03, 0x00, 0x04, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1,
            ],
            // SETTINGS claiming 2^32-1 entries
            &[0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
        ];
        for wire in cases {
            let err = decode_all(wire, &mut dec).unwrap_err();
            assert!(
                matches!(err, Error::BadLength { .. }),
                "{err} for {wire:02x?}"
            );
        }
    }

    #[test]
    fn invalid_fields_are_refused() {
        let mut dec = HeaderDecoder::new(1024);
        // SYN_STREAM for stream 0 (its header block still inflates first).
        let mut zero = SYN_STREAM;
        zero[11] = 0;
        let err = decode_all(&zero, &mut dec).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ZeroStreamId {
                    frame: "SYN_STREAM"
                }
            ),
            "{err}"
        );
        // DATA for stream 0
        let err = decode_all(&[0, 0, 0, 0, 0, 0, 0, 0], &mut dec).unwrap_err();
        assert!(
            matches!(err, Error::ZeroStreamId { frame: "DATA" }),
            "{err}"
        );
        // RST_STREAM with status 0
        let rst = [0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            decode_all(&rst, &mut dec),
            Err(Error::InvalidFrame { .. })
        ));
        // WINDOW_UPDATE with delta 0
        let wu = [0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            decode_all(&wu, &mut dec),
            Err(Error::InvalidFrame { .. })
        ));
        // PING with flags
        let ping = [0x80, 0x03, 0x00, 0x06, 0x01, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            decode_all(&ping, &mut dec),
            Err(Error::BadFlags { flags: 1, .. })
        ));
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let mut dec = HeaderDecoder::new(1024);
        // CREDENTIAL (10) and a type from the future
        let cred = [0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 2, 0xab, 0xcd];
        assert_eq!(
            decode_all(&cred, &mut dec).unwrap(),
            Frame::Unknown { frame_type: 10 }
        );
        let future = [0x80, 0x03, 0xff, 0xff, 0, 0, 0, 0];
        assert_eq!(
            decode_all(&future, &mut dec).unwrap(),
            Frame::Unknown { frame_type: 0xffff }
        );
    }
}
