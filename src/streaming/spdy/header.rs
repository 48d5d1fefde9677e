//! The SPDY/3 name/value header block and its zlib compression with the draft's dictionary.
//!
//! Uncompressed layout (draft 3.1, 2.6.10): `count (32)`, then `count` times
//! `name length (32) | name | value length (32) | value`. Names are non-empty lower-case ASCII
//! and unique; a value holds zero or more values joined by NUL, none of them empty. The block is
//! compressed by one zlib stream per direction per connection, seeded with [`DICTIONARY`], with a
//! SYNC_FLUSH after each block, so both ends must process every block in order.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::wire_u32;
use super::Error;

/// The dictionary's words, each preceded by its 32-bit length in [`DICTIONARY`].
const WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's tail, appended without length prefixes.
const TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

const fn dictionary_len() -> usize {
    let mut n = TAIL.len();
    let mut i = 0;
    while i < WORDS.len() {
        n += 4 + WORDS[i].len();
        i += 1;
    }
    n
}

const fn build_dictionary() -> [u8; dictionary_len()] {
    let mut out = [0u8; dictionary_len()];
    let mut at = 0;
    let mut i = 0;
    while i < WORDS.len() {
        let word = WORDS[i].as_bytes();
        // The dictionary's words are a few bytes long (checked at compile time: this is const).
        #[allow(clippy::cast_possible_truncation)]
        let len = (word.len() as u32).to_be_bytes();
        let mut j = 0;
        while j < 4 {
            out[at] = len[j];
            at += 1;
            j += 1;
        }
        j = 0;
        while j < word.len() {
            out[at] = word[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    let tail = TAIL.as_bytes();
    let mut j = 0;
    while j < tail.len() {
        out[at] = tail[j];
        at += 1;
        j += 1;
    }
    out
}

/// The SPDY/3 zlib dictionary (1423 bytes, Adler-32 `0xe3c6a7c2`).
pub const DICTIONARY: [u8; dictionary_len()] = build_dictionary();

/// The dictionary ID a SPDY/3 zlib header carries (the Adler-32 of [`DICTIONARY`]).
pub const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

/// A name/value header block: lower-case names, in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Self {
        Headers::default()
    }

    /// Sets `name` (lower-cased) to `value`, replacing an earlier value. Several values go in one
    /// `value` joined by NUL, as on the wire.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) -> Result<(), Error> {
        let name = name.to_ascii_lowercase();
        if !valid_name(name.as_bytes()) {
            return Err(Error::InvalidHeaderName(name));
        }
        let value = value.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name, value)),
        }
        Ok(())
    }

    /// The first value of `name` (looked up case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every value of `name` (the NUL-separated parts of its entry).
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(move |(n, _)| *n == name)
            .flat_map(|(_, v)| v.split('\0'))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The uncompressed block.
    pub fn encode(&self) -> Vec<u8> {
        let size = 4 + self
            .entries
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&wire_u32(self.entries.len()).to_be_bytes());
        for (name, value) in &self.entries {
            out.extend_from_slice(&wire_u32(name.len()).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&wire_u32(value.len()).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block; errors are stream errors of `stream_id`.
    pub fn decode(block: &[u8], stream_id: u32) -> Result<Headers, Error> {
        let bad = |reason| Error::InvalidHeaderBlock { stream_id, reason };
        let mut rest = block;
        let count = take_u32(&mut rest).ok_or(bad("truncated count"))? as usize;
        // Each pair takes at least 8 bytes, so the count cannot make us allocate more than the
        // (already bounded) block.
        if count > rest.len() / 8 {
            return Err(bad("more pairs than the block can hold"));
        }
        let mut entries: Vec<(String, String)> = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take_bytes(&mut rest).ok_or(bad("truncated name"))?;
            if name.is_empty() {
                return Err(bad("empty header name"));
            }
            if !valid_name(name) {
                return Err(bad("header name is not lower-case visible ASCII"));
            }
            let value = take_bytes(&mut rest).ok_or(bad("truncated value"))?;
            if !value.is_empty() && value.split(|b| *b == 0).any(|part| part.is_empty()) {
                return Err(bad("empty value between NUL separators"));
            }
            let name = String::from_utf8(name.to_vec()).map_err(|_| bad("name not UTF-8"))?;
            if entries.iter().any(|(n, _)| *n == name) {
                return Err(bad("duplicate header name"));
            }
            let value = String::from_utf8(value.to_vec()).map_err(|_| bad("value not UTF-8"))?;
            entries.push((name, value));
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the last pair"));
        }
        Ok(Headers { entries })
    }
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_be_bytes(*head))
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return None;
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    Some(bytes)
}

/// The sending side's zlib stream.
pub struct HeaderEncoder {
    zlib: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        HeaderEncoder::new()
    }
}

impl HeaderEncoder {
    pub fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&DICTIONARY)
            .expect("a fresh zlib stream accepts a dictionary");
        HeaderEncoder { zlib }
    }

    /// Compresses one block (ending with a SYNC_FLUSH) onto `out`.
    pub fn encode(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), Error> {
        let block = headers.encode();
        let mut input = &block[..];
        loop {
            out.reserve(block.len() / 2 + 64);
            let before_in = self.zlib.total_in();
            let before_out = self.zlib.total_out();
            self.zlib
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            let used = usize::try_from(self.zlib.total_in() - before_in).unwrap_or(input.len());
            input = &input[used..];
            let produced = self.zlib.total_out() - before_out;
            // Done when all input is in and the flush did not fill the space it was given.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
            if used == 0 && produced == 0 && input.is_empty() {
                return Ok(());
            }
        }
    }
}

/// The receiving side's zlib stream, with a bound on what one block may inflate to.
pub struct HeaderDecoder {
    zlib: Decompress,
    limit: usize,
}

impl HeaderDecoder {
    pub fn new(limit: usize) -> Self {
        HeaderDecoder {
            zlib: Decompress::new(true),
            limit,
        }
    }

    /// Inflates one compressed block. Any error here desynchronises the zlib stream, so it is a
    /// session error.
    pub fn decompress(&mut self, mut input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        loop {
            // One byte beyond the limit tells "exactly at the limit" from "above it".
            let room = (self.limit + 1 - out.len()).min(16 * 1024);
            out.reserve_exact(room);
            let spare = out.capacity() - out.len();
            let before_in = self.zlib.total_in();
            let before_out = out.len();
            let status = match self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(status) => status,
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        let used = usize::try_from(self.zlib.total_in() - before_in)
                            .unwrap_or(input.len());
                        input = &input[used..];
                        self.zlib
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| Error::Compression(e.to_string()))?;
                        continue;
                    }
                    Some(other) => {
                        return Err(Error::Compression(format!(
                            "unknown preset dictionary {other:#010x}"
                        )))
                    }
                    None => return Err(Error::Compression(e.to_string())),
                },
            };
            let used = usize::try_from(self.zlib.total_in() - before_in).unwrap_or(input.len());
            input = &input[used..];
            if out.len() > self.limit {
                return Err(Error::HeaderBlockTooLarge { limit: self.limit });
            }
            let produced = out.len() - before_out;
            let output_full = produced == spare;
            if input.is_empty() && !output_full {
                return Ok(out);
            }
            if used == 0 && produced == 0 {
                return Err(Error::Compression(match status {
                    Status::StreamEnd => "data after the end of the zlib stream".into(),
                    _ => "truncated or stalled zlib block".into(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adler-32 (RFC 1950 8.2), written out so the dictionary ID is checked independently of zlib.
    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for byte in data {
            a = (a + *byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn dictionary_matches_the_draft() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert_eq!(&DICTIONARY[DICTIONARY.len() - 9..], b",*,enq=0.");
        assert_eq!(adler32(&DICTIONARY), DICTIONARY_ID);
    }

    /// `{"streamtype": "error"}` then `{"streamtype": "stdout"}` as one zlib stream, produced once
    /// by the C zlib library (level 9, as Go's SPDY writer uses) with the SPDY/3 dictionary. The
    /// header `78 f9 e3 c6 a7 c2` is CMF/FLG with FDICT set and the dictionary ID.
    const BLOCK1: [u8; 30] = [
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
        0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];
    const BLOCK2: [u8; 15] = [
        0xc2, 0x2a, 0x05, 0x4c, 0xcc, 0x29, 0xf9, 0xa5, 0x25, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];

    fn stream_type(v: &str) -> Headers {
        let mut h = Headers::new();
        h.insert("streamType", v).unwrap();
        h
    }

    #[test]
    fn decompresses_a_fixed_vector_with_the_dictionary() {
        let mut dec = HeaderDecoder::new(1024);
        let one = dec.decompress(&BLOCK1).unwrap();
        assert_eq!(one, b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error");
        assert_eq!(Headers::decode(&one, 1).unwrap(), stream_type("error"));
        let two = dec.decompress(&BLOCK2).unwrap();
        assert_eq!(
            Headers::decode(&two, 3).unwrap().get("streamType"),
            Some("stdout")
        );
    }

    #[test]
    fn decompressing_without_the_dictionary_fails() {
        let mut plain = Decompress::new(true);
        let mut out = Vec::with_capacity(1024);
        let err = plain
            .decompress_vec(&BLOCK1, &mut out, FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(DICTIONARY_ID));
        assert!(out.is_empty());
    }

    #[test]
    fn a_different_dictionary_is_refused() {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(b"not the spdy dictionary").unwrap();
        let mut block = Vec::with_capacity(256);
        zlib.compress_vec(&stream_type("x").encode(), &mut block, FlushCompress::Sync)
            .unwrap();
        let err = HeaderDecoder::new(1024).decompress(&block).unwrap_err();
        assert!(
            matches!(err, Error::Compression(ref m) if m.contains("dictionary")),
            "{err}"
        );
    }

    #[test]
    fn compression_round_trips_across_blocks() {
        let mut enc = HeaderEncoder::new();
        let mut dec = HeaderDecoder::new(64 * 1024);
        let mut first = Vec::new();
        enc.encode(&stream_type("stdin"), &mut first).unwrap();
        assert_eq!(first[0], 0x78, "deflate, 32 KiB window");
        assert_eq!(first[1] & 0x20, 0x20, "FDICT set");
        assert_eq!(&first[2..6], &DICTIONARY_ID.to_be_bytes());
        assert_eq!(
            &first[first.len() - 4..],
            &[0, 0, 0xff, 0xff],
            "ends with a sync flush"
        );
        let raw = dec.decompress(&first).unwrap();
        assert_eq!(
            Headers::decode(&raw, 1).unwrap().get("streamtype"),
            Some("stdin")
        );
        let mut big = Headers::new();
        big.insert("port", "8080").unwrap();
        big.insert("requestid", "0").unwrap();
        big.insert("x-many", "a\0b\0c").unwrap();
        big.insert("x-long", "v".repeat(20_000)).unwrap();
        for h in [stream_type("stdin"), big.clone(), Headers::new(), big] {
            let mut block = Vec::new();
            enc.encode(&h, &mut block).unwrap();
            let raw = dec.decompress(&block).unwrap();
            assert_eq!(Headers::decode(&raw, 1).unwrap(), h);
        }
    }

    #[test]
    fn zip_bomb_is_cut_at_the_limit() {
        // 4 MiB of one byte inside one valid header value compresses to a few KiB.
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(&DICTIONARY).unwrap();
        let mut raw = Vec::new();
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.push(b'a');
        raw.extend_from_slice(&(4u32 << 20).to_be_bytes());
        raw.resize(raw.len() + (4 << 20), b'a');
        let mut block = Vec::with_capacity(64 * 1024);
        zlib.compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        assert!(block.len() < 64 * 1024, "{}", block.len());
        let err = HeaderDecoder::new(64 * 1024)
            .decompress(&block)
            .unwrap_err();
        assert!(
            matches!(err, Error::HeaderBlockTooLarge { limit: 65536 }),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_truncated_blocks_fail() {
        let mut dec = HeaderDecoder::new(1024);
        assert!(matches!(
            dec.decompress(&[0xde, 0xad, 0xbe, 0xef]),
            Err(Error::Compression(_))
        ));
        // A block cut before its end yields a short, unparseable header block.
        let mut dec = HeaderDecoder::new(1024);
        let raw = dec
            .decompress(&BLOCK1[..BLOCK1.len() - 10])
            .unwrap_or_default();
        assert!(Headers::decode(&raw, 1).is_err());
    }

    #[test]
    fn malformed_uncompressed_blocks_are_stream_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"\0\0", "truncated count"),
            (b"\0\0\0\x01\0\0\0\0\0\0\0\0", "empty header name"),
            (b"\0\0\0\x01\0\0\0\x01A\0\0\0\0", "lower-case"),
            (b"\0\0\0\x01\0\0\0\x01a\0\0\0\x03x\0\0", "NUL"),
            (b"\0\0\0\x01\0\0\0\x01a\0\0\0\x09x", "truncated value"),
            (
                b"\0\0\0\x02\0\0\0\x01a\0\0\0\0\0\0\0\x01a\0\0\0\0",
                "duplicate",
            ),
            (b"\xff\xff\xff\xff\0\0\0\0", "more pairs"),
            (b"\0\0\0\0x", "trailing"),
        ];
        for (raw, want) in cases {
            let err = Headers::decode(raw, 5).unwrap_err();
            assert!(err.to_string().contains(want), "{err} for {raw:?}");
            assert_eq!(
                err.stream_error(),
                Some((5, super::super::RstStatus::ProtocolError))
            );
        }
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_splits_values() {
        let mut h = Headers::new();
        h.insert(
            "X-Stream-Protocol-Version",
            "v4.channel.k8s.io\0v3.channel.k8s.io",
        )
        .unwrap();
        assert_eq!(
            h.get("x-stream-protocol-version"),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(h.get_all("X-STREAM-PROTOCOL-VERSION").count(), 2);
        assert!(h.insert("bad name", "x").is_err());
        assert!(h.insert("", "x").is_err());
    }
}
