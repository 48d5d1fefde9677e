//! Lets every gRPC client in: a unix-socket connection whose requests carry an `:authority`
//! that is not a valid URI authority (gRPC C-core ≥ 1.57, grpc-java and grpc-swift send the
//! socket path, raw or %-encoded) gets it replaced by `localhost` before h2 sees it. h2
//! resets such streams with PROTOCOL_ERROR and has no option to accept them
//! (hyperium/h2#487); ferrio does not route by authority, so the value carries nothing.
//!
//! The connection's incoming bytes pass through [`AuthorityFix`]: frames other than HEADERS and
//! CONTINUATION are copied as they come; a header block is gathered (HEADERS plus its
//! CONTINUATIONs, at most [`MAX_HEADER_BLOCK`]), decoded with the client's HPACK context and
//! encoded again with one of our own, which is the only encoder h2's decoder ever hears, so the
//! two dynamic tables cannot drift apart. Outgoing bytes are not touched. Written here: no
//! maintained crate rewrites HTTP/2 header blocks in a byte stream; HPACK itself is
//! `loona-hpack`'s.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE's floor): what the
/// re-encoded block is cut into, whatever h2 advertises.
const OUT_FRAME: usize = 16_384;
/// h2's SETTINGS_HEADER_TABLE_SIZE (the protocol's default, which hyper keeps): the largest
/// table the client's encoder may use.
const TABLE_SIZE: usize = 4096;
/// The largest header block gathered; a client that sends more loses its connection. hyper
/// refuses header lists over 16 KiB by default, so real requests are far below this.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

/// What the next incoming bytes are.
#[derive(Debug)]
enum State {
    /// The client's connection preface, `n` bytes of it still to come.
    Preface(usize),
    /// A frame header, or the whole of a HEADERS/CONTINUATION frame, is being read.
    Frame,
    /// The payload of a frame that is passed on as it is.
    Copy(usize),
}

/// A header block being gathered across HEADERS and CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The rewriting of one connection's client-to-server bytes, apart from any I/O.
pub struct Rewriter {
    state: State,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    /// How many `:authority` values were replaced (for the log and the tests).
    pub replaced: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Rewriter {
    pub fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            state: State::Preface(PREFACE_LEN),
            block: None,
            decoder,
            encoder: loona_hpack::Encoder::new(),
            replaced: 0,
        }
    }

    /// Whether `n` more bytes can be handed on untouched without looking at them.
    fn copying(&self) -> usize {
        match self.state {
            State::Preface(n) | State::Copy(n) => n,
            State::Frame => 0,
        }
    }

    fn copied(&mut self, n: usize) {
        match &mut self.state {
            State::Preface(left) => {
                *left -= n;
                if *left == 0 {
                    self.state = State::Frame;
                }
            }
            State::Copy(left) => {
                *left -= n;
                if *left == 0 {
                    self.state = State::Frame;
                }
            }
            State::Frame => {}
        }
    }

    /// Moves what it can from `input` to `out`, rewriting header blocks; what stays in
    /// `input` is an incomplete frame header or HEADERS/CONTINUATION frame.
    pub fn feed(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> io::Result<()> {
        loop {
            let n = self.copying().min(input.len());
            if n > 0 {
                out.extend_from_slice(&input.split_to(n));
                self.copied(n);
                continue;
            }
            if !matches!(self.state, State::Frame) || input.len() < FRAME_HEADER {
                return Ok(());
            }
            let len = u32::from_be_bytes([0, input[0], input[1], input[2]]) as usize;
            let (kind, flags) = (input[3], input[4]);
            let stream = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
            let in_block = self.block.is_some();
            if in_block && kind != CONTINUATION {
                return Err(bad("a header block was interrupted by another frame"));
            }
            if kind != HEADERS && !(in_block && kind == CONTINUATION) {
                out.extend_from_slice(&input.split_to(FRAME_HEADER));
                if len > 0 {
                    self.state = State::Copy(len);
                }
                continue;
            }
            let gathered = self.block.as_ref().map_or(0, |b| b.fragment.len());
            if len > MAX_HEADER_BLOCK || gathered + len > MAX_HEADER_BLOCK {
                return Err(bad(format!("a header block over {MAX_HEADER_BLOCK} bytes")));
            }
            if input.len() < FRAME_HEADER + len {
                input.reserve(FRAME_HEADER + len - input.len());
                return Ok(());
            }
            input.advance(FRAME_HEADER);
            let payload = input.split_to(len);
            if kind == HEADERS {
                self.block = Some(headers_frame(stream, flags, &payload)?);
            } else {
                let block = self.block.as_mut().expect("in a block");
                if block.stream != stream {
                    return Err(bad("a CONTINUATION for another stream"));
                }
                block.fragment.extend_from_slice(&payload);
            }
            if flags & END_HEADERS != 0 {
                let block = self.block.take().expect("a block");
                self.emit(block, out)?;
            }
        }
    }

    fn emit(&mut self, block: Block, out: &mut BytesMut) -> io::Result<()> {
        let mut fields = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| bad(format!("a header block that does not decode: {e:?}")))?;
        for (name, value) in &mut fields {
            if name.as_slice() == b":authority"
                && http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                *value = b"localhost".to_vec();
                self.replaced += 1;
            }
        }
        let encoded = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut first = Vec::with_capacity(5 + encoded.len().min(OUT_FRAME));
        let mut flags = 0;
        if let Some(p) = block.priority {
            first.extend_from_slice(&p);
            flags |= PRIORITY;
        }
        if block.end_stream {
            flags |= END_STREAM;
        }
        let room = OUT_FRAME - first.len();
        let (head, mut rest) = encoded.split_at(encoded.len().min(room));
        first.extend_from_slice(head);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        frame(out, HEADERS, flags, block.stream, &first);
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(rest.len().min(OUT_FRAME));
            let f = if more.is_empty() { END_HEADERS } else { 0 };
            frame(out, CONTINUATION, f, block.stream, chunk);
            rest = more;
        }
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame, its padding and priority taken off.
fn headers_frame(stream: u32, flags: u8, payload: &[u8]) -> io::Result<Block> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&n, rest) = p
            .split_first()
            .ok_or_else(|| bad("a PADDED frame without its length"))?;
        pad = n as usize;
        p = rest;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        if p.len() < 5 {
            return Err(bad("a PRIORITY frame too short"));
        }
        let mut b = [0; 5];
        b.copy_from_slice(&p[..5]);
        priority = Some(b);
        p = &p[5..];
    }
    if pad > p.len() {
        return Err(bad("padding longer than the frame"));
    }
    Ok(Block {
        stream,
        end_stream: flags & END_STREAM != 0,
        priority,
        fragment: p[..p.len() - pad].to_vec(),
    })
}

/// One frame; `payload` is at most `OUT_FRAME` bytes (callers split blocks), so its length
/// fits the 24-bit field.
fn frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// A connection whose incoming bytes go through a [`Rewriter`].
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    input: BytesMut,
    out: BytesMut,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: Rewriter::new(),
            input: BytesMut::new(),
            out: BytesMut::new(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                if this.input.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended inside a frame",
                )));
            }
            // A payload that is only copied goes straight into the caller's buffer.
            let direct = this.rewriter.copying();
            if direct > 0 && this.input.is_empty() {
                let want = direct.min(buf.remaining());
                let mut limited = ReadBuf::new(buf.initialize_unfilled_to(want));
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                let n = limited.filled().len();
                if n == 0 {
                    this.eof = true;
                    continue;
                }
                buf.advance(n);
                this.rewriter.copied(n);
                return Poll::Ready(Ok(()));
            }
            if this.input.capacity() - this.input.len() < READ_CHUNK {
                this.input.reserve(READ_CHUNK);
            }
            let n = std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.input
            ))?;
            if n == 0 {
                this.eof = true;
            }
            let (input, out) = (&mut this.input, &mut this.out);
            this.rewriter.feed(input, out)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        frame(&mut b, kind, flags, stream, payload);
        b.to_vec()
    }

    fn request(authority: &str) -> Fields {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/runtime.v1.RuntimeService/Version"),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// Runs `input` through a rewriter `chunk` bytes at a time.
    fn rewrite(input: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut r = Rewriter::new();
        let (mut pending, mut out) = (BytesMut::new(), BytesMut::new());
        for piece in input.chunks(chunk) {
            pending.extend_from_slice(piece);
            r.feed(&mut pending, &mut out)?;
        }
        assert!(pending.is_empty(), "{} bytes left", pending.len());
        Ok(out.to_vec())
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    /// The frames of `bytes` (after the preface) as (type, flags, stream, payload, fields),
    /// header blocks decoded with one context.
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>, Fields)> {
        assert_eq!(&bytes[..PREFACE_LEN], PREFACE);
        let mut p = &bytes[PREFACE_LEN..];
        let mut dec = loona_hpack::Decoder::new();
        let mut out = Vec::new();
        let mut block = Vec::new();
        while !p.is_empty() {
            let len = u32::from_be_bytes([0, p[0], p[1], p[2]]) as usize;
            let (kind, flags) = (p[3], p[4]);
            let stream = u32::from_be_bytes([p[5], p[6], p[7], p[8]]);
            let payload = p[9..9 + len].to_vec();
            p = &p[9 + len..];
            let mut fields = Vec::new();
            if kind == HEADERS || kind == CONTINUATION {
                assert!(len <= OUT_FRAME, "a header frame of {len} bytes");
                let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                assert_eq!(flags & PADDED, 0, "padding is taken off");
                block.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    fields = dec.decode(&block).unwrap();
                    block.clear();
                }
            }
            out.push((kind, flags, stream, payload, fields));
        }
        out
    }

    #[test]
    fn a_path_as_authority_becomes_localhost_and_the_rest_passes_unchanged() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(raw_frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        let enc_block = |enc: &mut loona_hpack::Encoder, f: &[(Vec<u8>, Vec<u8>)]| {
            enc.encode(f.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
        };
        let first = request("/run/ferrio/ferrio.sock");
        input.extend(raw_frame(
            HEADERS,
            END_HEADERS,
            1,
            &enc_block(&mut enc, &first),
        ));
        let data = vec![7u8; 40_000];
        input.extend(raw_frame(0x0, END_STREAM, 1, &data));
        // Stream 3: %-encoded, padded, with a priority, cut in three; its fields refer to
        // dynamic-table entries stream 1 made.
        let second = request("run%2Fferrio%2Fferrio.sock");
        let block = enc_block(&mut enc, &second);
        let (a, rest) = block.split_at(block.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut h = vec![4u8, 0, 0, 0, 1, 9];
        h.extend_from_slice(a);
        h.extend_from_slice(&[0; 4]);
        input.extend(raw_frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &h));
        input.extend(raw_frame(CONTINUATION, 0, 3, b));
        input.extend(raw_frame(CONTINUATION, END_HEADERS, 3, c));
        // Stream 5: a valid authority stays as it is.
        let third = request("localhost:1234");
        input.extend(raw_frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            5,
            &enc_block(&mut enc, &third),
        ));
        input.extend(raw_frame(0x8, 0, 0, &[0, 0, 1, 0]));

        for chunk in [1, 7, 4096, input.len()] {
            let out = rewrite(&input, chunk).unwrap();
            let f = frames(&out);
            assert_eq!(f.len(), 6, "chunk {chunk}");
            assert_eq!(
                (f[0].0, f[0].3.as_slice()),
                (0x4, &[0, 3, 0, 0, 0, 100][..])
            );
            let mut want = first.clone();
            want[3].1 = b"localhost".to_vec();
            assert_eq!((f[1].0, f[1].2), (HEADERS, 1));
            assert_eq!(f[1].4, want);
            assert_eq!((f[2].0, f[2].1, f[2].3.len()), (0x0, END_STREAM, 40_000));
            let mut want = second.clone();
            want[3].1 = b"localhost".to_vec();
            assert_eq!(f[3].1, PRIORITY | END_STREAM | END_HEADERS);
            assert_eq!(&f[3].3[..5], &[0, 0, 0, 1, 9]);
            assert_eq!(f[3].4, want);
            assert_eq!(f[4].4, third);
            assert_eq!(f[4].1, END_HEADERS | END_STREAM);
            assert_eq!((f[5].0, f[5].3.as_slice()), (0x8, &[0, 0, 1, 0][..]));
        }
    }

    #[test]
    fn a_block_larger_than_a_frame_is_cut_into_continuations() {
        let mut enc = loona_hpack::Encoder::new();
        let mut fields = request("/a/b.sock");
        fields.push((b"x-big".to_vec(), vec![b'y'; 40_000]));
        let block = enc.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut input = PREFACE.to_vec();
        for piece in block.chunks(16_000).enumerate() {
            let (i, p) = piece;
            let last = (i + 1) * 16_000 >= block.len();
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            input.extend(raw_frame(kind, if last { END_HEADERS } else { 0 }, 1, p));
        }
        let f = frames(&rewrite(&input, 1000).unwrap());
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].0, HEADERS);
        assert_eq!(f[0].1 & END_HEADERS, 0);
        assert_eq!((f[1].0, f[1].1), (CONTINUATION, 0));
        assert_eq!((f[2].0, f[2].1), (CONTINUATION, END_HEADERS));
        let mut want = fields;
        want[3].1 = b"localhost".to_vec();
        assert_eq!(f[2].4, want);
    }

    #[test]
    fn bad_input_ends_the_connection_with_a_clear_error() {
        let mut input = PREFACE.to_vec();
        input.extend(raw_frame(HEADERS, 0, 1, &[0x82]));
        input.extend(raw_frame(0x0, 0, 1, b"x"));
        let e = rewrite(&input, 3).unwrap_err();
        assert!(e.to_string().contains("interrupted"), "{e}");

        let mut input = PREFACE.to_vec();
        input.extend(raw_frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff]));
        let e = rewrite(&input, 100).unwrap_err();
        assert!(e.to_string().contains("does not decode"), "{e}");

        let mut input = PREFACE.to_vec();
        input.extend(raw_frame(HEADERS, PADDED | END_HEADERS, 1, &[200, 0x82]));
        let e = rewrite(&input, 100).unwrap_err();
        assert!(e.to_string().contains("padding"), "{e}");

        // Too big: refused as soon as the frame header says so, not after buffering it.
        let mut r = Rewriter::new();
        let mut pending = BytesMut::from(PREFACE);
        pending.extend_from_slice(&[0x20, 0, 0, HEADERS, 0, 0, 0, 0, 1]);
        let e = r.feed(&mut pending, &mut BytesMut::new()).unwrap_err();
        assert!(e.to_string().contains("over"), "{e}");
    }
}
