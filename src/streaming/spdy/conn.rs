//! A SPDY/3.1 server connection over any tokio transport.
//!
//! ```text
//! let (conn, mut acceptor) = SpdyConn::new(io, Config::kubernetes());
//! tokio::spawn(conn.run());                 // the driver: reads and writes the transport
//! while let Some(stream) = acceptor.accept().await {
//!     stream.headers().get("streamtype");   // "stdin", "stdout", "error", "data", …
//!     // stream: AsyncRead + AsyncWrite; shutdown() half-closes with an empty DATA+FIN
//! }
//! ```
//!
//! The driver answers every client SYN_STREAM (odd, increasing IDs) with an empty SYN_REPLY before
//! handing the stream out, so a client waiting for the reply is never stuck on the application;
//! an application that does not want a stream resets it ([`SpdyStream::reset`]). PINGs are echoed,
//! WINDOW_UPDATEs are sent as the application reads, and the peer's are honoured when
//! [`Config::honor_peer_window`] is set. Each stream must be read by its own task: while one
//! stream's unread data is above [`Config::stream_buffer`], the whole connection stops reading.
//!
//! Dropping a [`SpdyStream`] ends it: with an empty DATA+FIN if the peer had already finished
//! sending, else with RST_STREAM CANCEL. Dropping the [`StreamAcceptor`] sends GOAWAY; the
//! transport is closed once no stream is left. [`ConnHandle::close`] closes at once.

use super::frame::wire_u32;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::sync::{mpsc, oneshot, Notify};

use super::frame::{
    self, Frame, FrameHead, GoAwayStatus, Limits, RstStatus, Setting, SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
};
use super::header::{HeaderDecoder, HeaderEncoder, Headers};
pub use super::Config;
use super::{Error, DEFAULT_WINDOW, MAX_WINDOW};

/// How long the driver keeps writing (GOAWAY, queued data) after the reading side has ended.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// The connection's driver. [`SpdyConn::run`] must be polled (spawned) for anything to happen.
pub struct SpdyConn<T> {
    io: T,
    inner: Arc<Inner>,
}

/// Hands out the streams the client opens.
pub struct StreamAcceptor {
    rx: mpsc::UnboundedReceiver<SpdyStream>,
    inner: Arc<Inner>,
}

/// Controls the connection from anywhere: ping, graceful GOAWAY, close.
#[derive(Clone)]
pub struct ConnHandle {
    inner: Arc<Inner>,
}

/// One client-opened stream: its SYN_STREAM headers and a byte stream each way.
pub struct SpdyStream {
    id: u32,
    headers: Headers,
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    state: Mutex<Shared>,
    /// Frames were queued, or the connection is closing.
    writer_wake: Notify,
    /// The reader may have been un-paused, or the connection is closing.
    reader_wake: Notify,
}

struct StreamState {
    recv: VecDeque<Bytes>,
    recv_len: usize,
    remote_fin: bool,
    local_fin: bool,
    reset: Option<RstStatus>,
    send_window: i64,
    /// Bytes the application read that no WINDOW_UPDATE announced yet.
    recv_unacked: u32,
    read_waker: Option<Waker>,
    /// Sequence number of this stream's last queued frame (for flush).
    last_seq: u64,
}

struct Shared {
    streams: HashMap<u32, StreamState>,
    /// Highest stream ID of any SYN_STREAM received.
    last_seen: u32,
    /// Highest stream ID replied to (GOAWAY's last-good-stream-ID).
    last_good: u32,
    conn_send_window: i64,
    conn_recv_unacked: u32,
    peer_initial_window: i64,
    queue: VecDeque<(u64, Frame)>,
    urgent: VecDeque<(u64, Frame)>,
    queued_bytes: usize,
    next_seq: u64,
    written_seq: u64,
    /// Writers waiting for window, queue room or a flush.
    waiters: Vec<Waker>,
    accept_tx: Option<mpsc::UnboundedSender<SpdyStream>>,
    pings: HashMap<u32, (Instant, oneshot::Sender<Duration>)>,
    next_ping: u32,
    /// The stream ID of the last RST_STREAM sent for an unknown stream (coalescing).
    last_rst: u32,
    going_away: bool,
    peer_gone_away: bool,
    /// Write what is queued, then close the transport.
    closing: bool,
    /// The transport is finished: every operation fails.
    closed: bool,
}

fn frame_cost(frame: &Frame) -> usize {
    match frame {
        Frame::Data { data, .. } => 8 + data.len(),
        _ => 64,
    }
}

impl Shared {
    fn push(&mut self, frame: Frame, urgent: bool) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.queued_bytes += frame_cost(&frame);
        if urgent {
            self.urgent.push_back((seq, frame));
        } else {
            self.queue.push_back((seq, frame));
        }
        seq
    }

    fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn wake_all(&mut self) {
        self.wake_waiters();
        for st in self.streams.values_mut() {
            if let Some(w) = st.read_waker.take() {
                w.wake();
            }
        }
    }

    /// Counts `n` received bytes as consumed at the connection level.
    fn conn_consumed(&mut self, n: usize) {
        self.conn_recv_unacked = self.conn_recv_unacked.saturating_add(wire_u32(n));
        if self.conn_recv_unacked >= DEFAULT_WINDOW / 2 {
            let delta = self.conn_recv_unacked;
            self.conn_recv_unacked = 0;
            self.push(
                Frame::WindowUpdate {
                    stream_id: 0,
                    delta,
                },
                true,
            );
        }
    }

    fn read_paused(&self, config: &Config) -> bool {
        self.queued_bytes >= config.max_pending_write
            || self
                .streams
                .values()
                .any(|st| st.recv_len >= config.stream_buffer)
    }

    fn maybe_finish(&mut self) {
        if (self.going_away || self.peer_gone_away) && self.streams.is_empty() {
            self.closing = true;
        }
    }

    fn go_away(&mut self, status: GoAwayStatus) {
        if !self.going_away {
            self.going_away = true;
            self.accept_tx = None;
            let last_good_stream_id = self.last_good;
            self.push(
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                },
                false,
            );
        }
        self.maybe_finish();
    }

    fn rst(&mut self, stream_id: u32, status: RstStatus) {
        self.push(Frame::RstStream { stream_id, status }, false);
    }

    fn mark_closed(&mut self) {
        self.closed = true;
        self.closing = true;
        self.accept_tx = None;
        self.pings.clear();
        self.queue.clear();
        self.urgent.clear();
        self.wake_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_driver(&self) {
        self.writer_wake.notify_one();
        self.reader_wake.notify_one();
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> SpdyConn<T> {
    /// A server connection over `io` (after the HTTP/1.1 `101 Switching Protocols`).
    pub fn new(io: T, config: Config) -> (SpdyConn<T>, StreamAcceptor) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shared = Shared {
            streams: HashMap::new(),
            last_seen: 0,
            last_good: 0,
            conn_send_window: DEFAULT_WINDOW as i64,
            conn_recv_unacked: 0,
            peer_initial_window: DEFAULT_WINDOW as i64,
            queue: VecDeque::new(),
            urgent: VecDeque::new(),
            queued_bytes: 0,
            next_seq: 0,
            written_seq: 0,
            waiters: Vec::new(),
            accept_tx: Some(tx),
            pings: HashMap::new(),
            next_ping: 2,
            last_rst: 0,
            going_away: false,
            peer_gone_away: false,
            closing: false,
            closed: false,
        };
        shared.push(
            Frame::Settings {
                clear: false,
                entries: vec![Setting {
                    flags: 0,
                    id: SETTINGS_MAX_CONCURRENT_STREAMS,
                    value: wire_u32(config.max_streams),
                }],
            },
            false,
        );
        let inner = Arc::new(Inner {
            config,
            state: Mutex::new(shared),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
        });
        (
            SpdyConn {
                io,
                inner: inner.clone(),
            },
            StreamAcceptor { rx, inner },
        )
    }

    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            inner: self.inner.clone(),
        }
    }

    /// Runs the connection until the transport is closed: `Ok` after a clean end (GOAWAY or EOF
    /// between frames), the error that ended it otherwise. A session error is answered with
    /// GOAWAY PROTOCOL_ERROR before the transport is closed.
    pub async fn run(self) -> Result<(), Error> {
        let inner = self.inner;
        let _closed = CloseGuard(inner.clone());
        let (rd, wr) = tokio::io::split(self.io);
        let reader = read_loop(&inner, BufReader::new(rd));
        let writer = write_loop(&inner, wr);
        tokio::pin!(reader, writer);
        tokio::select! {
            read = &mut reader => {
                {
                    let mut s = inner.lock();
                    if let Err(e) = &read {
                        tracing::debug!(error = %e, "SPDY session error");
                        if !matches!(e, Error::Io(_) | Error::UnexpectedEof) {
                            s.going_away = false;
                            s.go_away(GoAwayStatus::ProtocolError);
                        }
                    }
                    s.closing = true;
                    s.wake_all();
                }
                inner.writer_wake.notify_one();
                let written = tokio::time::timeout(FINAL_FLUSH, &mut writer).await;
                match (read, written) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Ok(w)) => w,
                    (Ok(()), Err(_)) => Err(Error::Io(io::ErrorKind::TimedOut.into())),
                }
            }
            written = &mut writer => written,
        }
    }
}

/// Marks the connection closed however `run` ends (also when its future is dropped).
struct CloseGuard(Arc<Inner>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.lock().mark_closed();
    }
}

async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    limits: &Limits,
    decoder: &mut HeaderDecoder,
) -> Result<Option<Frame>, Error> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        let n = rd.read(&mut head[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(Error::UnexpectedEof)
            };
        }
        got += n;
    }
    let head = FrameHead::parse(head, limits)?;
    // Bounded by `limits`, checked above.
    let mut payload = BytesMut::zeroed(head.len());
    rd.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::UnexpectedEof
        } else {
            Error::Io(e)
        }
    })?;
    frame::decode(head, payload.freeze(), decoder).map(Some)
}

async fn read_loop<R: AsyncRead + Unpin>(inner: &Arc<Inner>, mut rd: R) -> Result<(), Error> {
    let limits = Limits {
        max_control_frame: inner.config.max_control_frame,
        max_data_frame: inner.config.max_data_frame,
    };
    let mut decoder = HeaderDecoder::new(inner.config.max_header_block);
    loop {
        loop {
            let paused = {
                let s = inner.lock();
                if s.closing {
                    return Ok(());
                }
                s.read_paused(&inner.config)
            };
            if !paused {
                break;
            }
            inner.reader_wake.notified().await;
        }
        let frame = tokio::select! {
            frame = read_frame(&mut rd, &limits, &mut decoder) => frame,
            _ = closing(inner) => return Ok(()),
        };
        match frame {
            Ok(Some(frame)) => {
                let handled = handle_frame(inner, frame);
                // Whatever the frame queued (replies, resets, window updates) goes out now.
                inner.writer_wake.notify_one();
                handled?
            }
            Ok(None) => {
                let s = inner.lock();
                if !s.peer_gone_away {
                    tracing::debug!("SPDY transport closed by the peer without GOAWAY");
                }
                return Ok(());
            }
            Err(e) => match e.stream_error() {
                Some((stream_id, status)) => {
                    tracing::debug!(error = %e, stream_id, "SPDY stream error");
                    let mut s = inner.lock();
                    s.last_seen = s.last_seen.max(stream_id);
                    if let Some(st) = s.streams.get_mut(&stream_id) {
                        st.reset = Some(status);
                    }
                    s.rst(stream_id, status);
                    s.wake_all();
                    drop(s);
                    inner.writer_wake.notify_one();
                }
                None => return Err(e),
            },
        }
    }
}

/// Resolves once the connection is closing (polled beside a blocking read).
async fn closing(inner: &Inner) {
    loop {
        let notified = inner.reader_wake.notified();
        if inner.lock().closing {
            return;
        }
        notified.await;
    }
}

fn handle_frame(inner: &Arc<Inner>, frame: Frame) -> Result<(), Error> {
    let config = &inner.config;
    let mut s = inner.lock();
    match frame {
        Frame::SynStream {
            stream_id,
            fin,
            unidirectional,
            headers,
            ..
        } => {
            if stream_id % 2 == 0 {
                return Err(Error::EvenStreamId(stream_id));
            }
            if let Some(st) = s.streams.get_mut(&stream_id) {
                st.reset = Some(RstStatus::ProtocolError);
                s.rst(stream_id, RstStatus::ProtocolError);
                s.wake_all();
                tracing::debug!(stream_id, "SPDY duplicate SYN_STREAM");
                return Ok(());
            }
            if stream_id <= s.last_seen {
                return Err(Error::StreamIdNotIncreasing {
                    id: stream_id,
                    last: s.last_seen,
                });
            }
            s.last_seen = stream_id;
            if s.going_away {
                // Draft 3.1, 2.6.6: after GOAWAY, new SYN_STREAMs are ignored.
                return Ok(());
            }
            if s.streams.len() >= config.max_streams || s.accept_tx.is_none() {
                s.rst(stream_id, RstStatus::RefusedStream);
                return Ok(());
            }
            let send_window = s.peer_initial_window;
            s.streams.insert(
                stream_id,
                StreamState {
                    recv: VecDeque::new(),
                    recv_len: 0,
                    remote_fin: fin,
                    local_fin: unidirectional,
                    reset: None,
                    send_window,
                    recv_unacked: 0,
                    read_waker: None,
                    last_seq: 0,
                },
            );
            let seq = s.push(
                Frame::SynReply {
                    stream_id,
                    fin: unidirectional,
                    headers: Headers::new(),
                },
                false,
            );
            s.last_good = stream_id;
            if let Some(st) = s.streams.get_mut(&stream_id) {
                st.last_seq = seq;
            }
            let stream = SpdyStream {
                id: stream_id,
                headers,
                inner: inner.clone(),
            };
            let tx = s.accept_tx.clone();
            if let Some(Err(mpsc::error::SendError(stream))) = tx.map(|tx| tx.send(stream)) {
                // The acceptor is gone: dropping the stream (outside the lock) resets it.
                drop(s);
                drop(stream);
                return Ok(());
            }
        }
        Frame::SynReply { stream_id, .. } => {
            // This server opens no streams, so no SYN_REPLY is ever due.
            s.rst(stream_id, RstStatus::ProtocolError);
            if let Some(st) = s.streams.get_mut(&stream_id) {
                st.reset = Some(RstStatus::ProtocolError);
            }
            s.wake_all();
        }
        Frame::Headers { stream_id, fin, .. } => match s.streams.get_mut(&stream_id) {
            Some(st) if st.reset.is_none() => {
                if fin {
                    st.remote_fin = true;
                    if let Some(w) = st.read_waker.take() {
                        w.wake();
                    }
                }
            }
            Some(_) => {}
            None => s.rst(stream_id, RstStatus::InvalidStream),
        },
        Frame::RstStream { stream_id, status } => {
            if let Some(st) = s.streams.get_mut(&stream_id) {
                tracing::debug!(stream_id, ?status, "SPDY stream reset by the peer");
                st.reset = Some(status);
                let dropped = std::mem::take(&mut st.recv_len);
                st.recv.clear();
                s.conn_consumed(dropped);
                s.wake_all();
            }
        }
        Frame::Settings { entries, .. } => {
            let mut seen = Vec::new();
            for e in entries {
                if seen.contains(&e.id) {
                    continue; // only the first value of an ID counts
                }
                seen.push(e.id);
                if e.id == SETTINGS_INITIAL_WINDOW_SIZE {
                    if e.value as i64 > MAX_WINDOW {
                        return Err(Error::BadInitialWindow(e.value));
                    }
                    let diff = e.value as i64 - s.peer_initial_window;
                    s.peer_initial_window = e.value as i64;
                    for st in s.streams.values_mut() {
                        st.send_window += diff;
                    }
                    s.wake_waiters();
                }
            }
        }
        Frame::Ping { id } => {
            if id % 2 == 1 {
                s.push(Frame::Ping { id }, true);
            } else if let Some((sent, tx)) = s.pings.remove(&id) {
                let _ = tx.send(sent.elapsed());
            }
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            tracing::debug!(last_good_stream_id, ?status, "SPDY GOAWAY from the peer");
            s.peer_gone_away = true;
            s.accept_tx = None;
            s.maybe_finish();
        }
        Frame::WindowUpdate {
            stream_id: 0,
            delta,
        } => {
            s.conn_send_window += delta as i64;
            if s.conn_send_window > MAX_WINDOW {
                return Err(Error::WindowOverflow);
            }
            s.wake_waiters();
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut overflow = false;
            if let Some(st) = s.streams.get_mut(&stream_id) {
                st.send_window += delta as i64;
                if st.send_window > MAX_WINDOW && st.reset.is_none() {
                    st.reset = Some(RstStatus::FlowControlError);
                    overflow = true;
                }
            }
            if overflow {
                s.rst(stream_id, RstStatus::FlowControlError);
            }
            s.wake_all();
        }
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            let len = data.len();
            let mut reply = None;
            match s.streams.get_mut(&stream_id) {
                None => {
                    if s.last_rst != stream_id {
                        reply = Some(RstStatus::InvalidStream);
                    }
                    s.conn_consumed(len);
                }
                Some(st) if st.reset.is_some() => s.conn_consumed(len),
                Some(st) if st.remote_fin => {
                    st.reset = Some(RstStatus::StreamAlreadyClosed);
                    if let Some(w) = st.read_waker.take() {
                        w.wake();
                    }
                    reply = Some(RstStatus::StreamAlreadyClosed);
                    s.conn_consumed(len);
                }
                Some(st) => {
                    if len > 0 {
                        st.recv_len += len;
                        st.recv.push_back(data);
                    }
                    st.remote_fin = fin;
                    if let Some(w) = st.read_waker.take() {
                        w.wake();
                    }
                }
            }
            if let Some(status) = reply {
                s.last_rst = stream_id;
                s.rst(stream_id, status);
            }
        }
        Frame::Unknown { frame_type } => {
            tracing::debug!(frame_type, "SPDY control frame of unknown type skipped");
        }
    }
    Ok(())
}

async fn write_loop<W: AsyncWrite + Unpin>(inner: &Arc<Inner>, mut wr: W) -> Result<(), Error> {
    let mut encoder = HeaderEncoder::new();
    let mut buf = BytesMut::new();
    loop {
        let notified = inner.writer_wake.notified();
        let (batch, upto, cost, finish) = {
            let mut s = inner.lock();
            if s.closed {
                return Ok(());
            }
            let mut batch: Vec<Frame> = s.urgent.drain(..).map(|(_, f)| f).collect();
            batch.extend(s.queue.drain(..).map(|(_, f)| f));
            let cost = batch.iter().map(frame_cost).sum::<usize>();
            // Frames are queued and `closing` set under one lock: nothing queued means done.
            let finish = batch.is_empty() && s.closing;
            (batch, s.next_seq, cost, finish)
        };
        if batch.is_empty() {
            if finish {
                let _ = wr.shutdown().await;
                let mut s = inner.lock();
                s.mark_closed();
                drop(s);
                inner.reader_wake.notify_one();
                return Ok(());
            }
            notified.await;
            continue;
        }
        buf.clear();
        for frame in &batch {
            frame::encode(frame, &mut encoder, &mut buf)?;
        }
        let written = async {
            wr.write_all(&buf).await?;
            wr.flush().await
        }
        .await;
        let mut s = inner.lock();
        if let Err(e) = written {
            s.mark_closed();
            drop(s);
            inner.reader_wake.notify_one();
            return Err(Error::Io(e));
        }
        s.written_seq = upto;
        s.queued_bytes -= cost;
        s.wake_waiters();
        drop(s);
        inner.reader_wake.notify_one();
    }
}

impl StreamAcceptor {
    /// The next stream the client opened, or `None` once the connection is going away or gone.
    pub async fn accept(&mut self) -> Option<SpdyStream> {
        self.rx.recv().await
    }

    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for StreamAcceptor {
    fn drop(&mut self) {
        self.inner.lock().go_away(GoAwayStatus::Ok);
        self.inner.wake_driver();
    }
}

impl ConnHandle {
    /// Sends a PING (even ID) and waits for the echo.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let rx = {
            let mut s = self.inner.lock();
            if s.closing {
                return Err(Error::Closed);
            }
            let id = s.next_ping;
            s.next_ping = if id >= 0x7fff_fffe { 2 } else { id + 2 };
            let (tx, rx) = oneshot::channel();
            s.pings.insert(id, (Instant::now(), tx));
            s.push(Frame::Ping { id }, true);
            rx
        };
        self.inner.writer_wake.notify_one();
        rx.await.map_err(|_| Error::Closed)
    }

    /// Sends GOAWAY (OK): no new streams; the transport closes when the open streams are done.
    pub fn go_away(&self) {
        self.inner.lock().go_away(GoAwayStatus::Ok);
        self.inner.wake_driver();
    }

    /// Sends GOAWAY and closes the transport as soon as the queue is written; open streams fail.
    pub fn close(&self) {
        let mut s = self.inner.lock();
        s.go_away(GoAwayStatus::Ok);
        s.closing = true;
        s.wake_all();
        drop(s);
        self.inner.wake_driver();
    }

    /// Whether the transport is finished.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }
}

impl SpdyStream {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the client's SYN_STREAM.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Ends the stream abruptly with RST_STREAM `status`.
    pub fn reset(self, status: RstStatus) {
        let mut s = self.inner.lock();
        if let Some(st) = s.streams.get_mut(&self.id) {
            if st.reset.is_none() {
                st.reset = Some(status);
                s.rst(self.id, status);
            }
        }
        // Drop removes the stream.
    }

    fn with_state<R>(
        &self,
        f: impl FnOnce(&mut Shared, &Config) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let mut s = self.inner.lock();
        let result = f(&mut s, &self.inner.config);
        drop(s);
        self.inner.wake_driver();
        result
    }
}

fn reset_error(status: RstStatus) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("SPDY stream reset ({status:?})"),
    )
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "SPDY connection closed")
}

impl AsyncRead for SpdyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let id = self.id;
        self.with_state(|s, _| {
            let closed = s.closed;
            let Some(st) = s.streams.get_mut(&id) else {
                return Poll::Ready(Err(closed_error()));
            };
            if let Some(status) = st.reset {
                return Poll::Ready(Err(reset_error(status)));
            }
            if st.recv_len > 0 {
                let mut n = 0;
                while buf.remaining() > 0 {
                    let Some(chunk) = st.recv.front_mut() else {
                        break;
                    };
                    let take = chunk.len().min(buf.remaining());
                    buf.put_slice(&chunk.split_to(take));
                    n += take;
                    if chunk.is_empty() {
                        st.recv.pop_front();
                    }
                }
                st.recv_len -= n;
                st.recv_unacked = st.recv_unacked.saturating_add(wire_u32(n));
                let update = if !st.remote_fin && st.recv_unacked >= DEFAULT_WINDOW / 2 {
                    Some(std::mem::take(&mut st.recv_unacked))
                } else {
                    None
                };
                if let Some(delta) = update {
                    s.push(
                        Frame::WindowUpdate {
                            stream_id: id,
                            delta,
                        },
                        true,
                    );
                }
                s.conn_consumed(n);
                return Poll::Ready(Ok(()));
            }
            if st.remote_fin {
                return Poll::Ready(Ok(()));
            }
            if closed || s.closing {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "SPDY connection ended before the stream's FIN",
                )));
            }
            st.read_waker = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

impl AsyncWrite for SpdyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let id = self.id;
        self.with_state(|s, config| {
            if s.closing {
                return Poll::Ready(Err(closed_error()));
            }
            let room = s.queued_bytes < config.max_pending_write;
            let conn_window = s.conn_send_window;
            let Some(st) = s.streams.get_mut(&id) else {
                return Poll::Ready(Err(closed_error()));
            };
            if let Some(status) = st.reset {
                return Poll::Ready(Err(reset_error(status)));
            }
            if st.local_fin {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "SPDY stream already half-closed",
                )));
            }
            let mut n = buf.len().min(config.max_send_frame);
            if config.honor_peer_window {
                let window = st.send_window.min(conn_window);
                if window <= 0 || !room {
                    s.waiters.push(cx.waker().clone());
                    return Poll::Pending;
                }
                n = n.min(usize::try_from(window).unwrap_or(usize::MAX));
            } else if !room {
                s.waiters.push(cx.waker().clone());
                return Poll::Pending;
            }
            st.send_window -= n as i64;
            s.conn_send_window -= n as i64;
            let seq = s.push(
                Frame::Data {
                    stream_id: id,
                    fin: false,
                    data: Bytes::copy_from_slice(&buf[..n]),
                },
                false,
            );
            if let Some(st) = s.streams.get_mut(&id) {
                st.last_seq = seq;
            }
            Poll::Ready(Ok(n))
        })
    }

    /// Waits until everything this stream queued has been written to the transport.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        self.with_state(|s, _| {
            let last = s.streams.get(&id).map_or(0, |st| st.last_seq);
            if last <= s.written_seq {
                Poll::Ready(Ok(()))
            } else if s.closed {
                Poll::Ready(Err(closed_error()))
            } else {
                s.waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Half-closes: queues an empty DATA+FIN (once), then flushes.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        let ready = self.with_state(|s, _| {
            let closing = s.closing;
            let Some(st) = s.streams.get_mut(&id) else {
                return Poll::Ready(Ok(()));
            };
            if st.reset.is_some() || st.local_fin {
                return Poll::Ready(Ok(()));
            }
            if closing {
                return Poll::Ready(Err(closed_error()));
            }
            st.local_fin = true;
            let seq = s.push(
                Frame::Data {
                    stream_id: id,
                    fin: true,
                    data: Bytes::new(),
                },
                false,
            );
            if let Some(st) = s.streams.get_mut(&id) {
                st.last_seq = seq;
            }
            Poll::Ready(Ok(()))
        });
        match ready {
            Poll::Ready(Ok(())) => self.as_mut().poll_flush(cx),
            other => other,
        }
    }
}

impl Drop for SpdyStream {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        if let Some(st) = s.streams.remove(&self.id) {
            if st.reset.is_none() && !s.closing && !(st.local_fin && st.remote_fin) {
                if st.remote_fin {
                    s.push(
                        Frame::Data {
                            stream_id: self.id,
                            fin: true,
                            data: Bytes::new(),
                        },
                        false,
                    );
                } else {
                    s.rst(self.id, RstStatus::Cancel);
                }
            }
            s.conn_consumed(st.recv_len);
            s.maybe_finish();
        }
        drop(s);
        self.inner.wake_driver();
    }
}

impl std::fmt::Debug for SpdyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyStream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}
