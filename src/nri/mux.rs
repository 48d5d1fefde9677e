//! NRI's connection multiplexer: one unix stream (the "trunk") per plugin carries two logical
//! byte streams, each framed as `conn id (u32 BE) | length (u32 BE) | payload`. On connection 1
//! the plugin serves NRI's `Plugin` service and the runtime calls it; on connection 2 the runtime
//! serves `Runtime` (registration, unsolicited updates) and the plugin calls it. Opening and
//! closing a logical connection sends nothing; closing the trunk ends both.
//!
//! Written here: containerd/nri's `pkg/net/multiplex` exists only in Go, and there is no crate.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Mutex};

/// The logical connection on which the plugin serves and the runtime calls.
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// The logical connection on which the runtime serves and the plugin calls.
pub const RUNTIME_SERVICE_CONN: u32 = 2;
/// The largest frame payload accepted: a ttrpc message (4 MiB) and its 10-byte header.
pub const MAX_FRAME: usize = (4 << 20) + 10;
/// The largest frame payload sent. Go's multiplexer hands each frame to one `Read` whole and
/// fails when the reader's buffer is smaller; Go's ttrpc reads through a 4096-byte buffer.
pub const SEND_FRAME: usize = 4096;

/// The sending side of a trunk, shared by both logical connections.
#[derive(Clone)]
pub struct Trunk {
    w: Arc<Mutex<OwnedWriteHalf>>,
    /// A duplicate of the socket, to shut it down without waiting for the writer's lock (a
    /// write stuck on a peer that stopped reading holds it).
    fd: Option<Arc<std::os::fd::OwnedFd>>,
}

impl Trunk {
    /// Sends `data` on logical connection `conn`, in frames of at most [`SEND_FRAME`] bytes.
    /// One message's frames go out together (the trunk is locked meanwhile).
    pub async fn send(&self, conn: u32, data: &[u8]) -> std::io::Result<()> {
        let mut w = self.w.lock().await;
        let mut out = Vec::with_capacity(data.len() + 8 * (data.len() / SEND_FRAME + 1));
        for chunk in data.chunks(SEND_FRAME) {
            out.extend_from_slice(&conn.to_be_bytes());
            // A chunk is at most SEND_FRAME (4096) bytes: it fits.
            out.extend_from_slice(&u32::try_from(chunk.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        w.write_all(&out).await?;
        w.flush().await
    }

    /// Shuts the trunk down both ways: the peer sees the end of both connections, our readers
    /// end, and a write in progress fails at once. Never waits.
    pub async fn close(&self) {
        use std::os::fd::AsRawFd;
        match &self.fd {
            Some(fd) => {
                let _ =
                    nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
            // No duplicate (out of descriptors at connect): through the writer, bounded.
            None => {
                if let Ok(mut w) =
                    tokio::time::timeout(std::time::Duration::from_secs(1), self.w.lock()).await
                {
                    let _ = w.shutdown().await;
                }
            }
        }
    }
}

/// The receiving side of one logical connection: its frames' payloads in order.
pub struct ConnReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ConnReader {
    /// Reads exactly `n` bytes; `None` at the end of the connection (also mid-message).
    pub async fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pos >= self.buf.len() {
                self.buf = self.rx.recv().await?;
                self.pos = 0;
                continue;
            }
            let take = (n - out.len()).min(self.buf.len() - self.pos);
            out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            self.pos += take;
        }
        Some(out)
    }
}

/// Splits a connected trunk into its sender and the readers of connections 1 and 2. A task
/// reads the trunk until it ends or breaks the framing (a frame over [`MAX_FRAME`], or for a
/// connection other than 1 and 2, which ends the trunk: nothing else is defined).
pub fn split(stream: UnixStream) -> (Trunk, ConnReader, ConnReader) {
    let fd = {
        use std::os::fd::AsFd;
        stream.as_fd().try_clone_to_owned().ok().map(Arc::new)
    };
    let (r, w) = stream.into_split();
    let (tx1, rx1) = mpsc::channel(256);
    let (tx2, rx2) = mpsc::channel(256);
    tokio::spawn(pump(r, tx1, tx2));
    let reader = |rx| ConnReader {
        rx,
        buf: Vec::new(),
        pos: 0,
    };
    (
        Trunk {
            w: Arc::new(Mutex::new(w)),
            fd,
        },
        reader(rx1),
        reader(rx2),
    )
}

async fn pump(mut r: OwnedReadHalf, tx1: mpsc::Sender<Vec<u8>>, tx2: mpsc::Sender<Vec<u8>>) {
    let mut head = [0u8; 8];
    loop {
        if r.read_exact(&mut head).await.is_err() {
            return;
        }
        let conn = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            tracing::warn!(len, "NRI: a frame over 4 MiB; closing the connection");
            return;
        }
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).await.is_err() {
            return;
        }
        let tx = match conn {
            PLUGIN_SERVICE_CONN => &tx1,
            RUNTIME_SERVICE_CONN => &tx2,
            other => {
                tracing::warn!(
                    conn = other,
                    "NRI: a frame for an unknown connection; closing"
                );
                return;
            }
        };
        if payload.is_empty() {
            continue;
        }
        // A reader that went away (its side is done) drops what comes for it.
        let _ = tx.send(payload).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_carry_each_connection_in_order_and_in_small_frames() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (ta, _a1, _a2) = split(a);
        let (raw_r, _raw_w) = b.into_split();
        let big = vec![7u8; 10_000];
        ta.send(RUNTIME_SERVICE_CONN, &big).await.expect("send");
        ta.send(PLUGIN_SERVICE_CONN, b"hi").await.expect("send");
        // The raw frames: 4096 + 4096 + 1808 bytes on connection 2, then 2 on connection 1.
        let mut r = raw_r;
        let mut sizes = Vec::new();
        for _ in 0..4 {
            let mut head = [0u8; 8];
            r.read_exact(&mut head).await.expect("head");
            let conn = u32::from_be_bytes(head[..4].try_into().expect("4"));
            let len = u32::from_be_bytes(head[4..].try_into().expect("4")) as usize;
            let mut p = vec![0u8; len];
            r.read_exact(&mut p).await.expect("payload");
            sizes.push((conn, len));
        }
        assert_eq!(sizes, vec![(2, 4096), (2, 4096), (2, 1808), (1, 2)]);
    }

    #[tokio::test]
    async fn a_reader_reassembles_messages_across_frames() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (ta, _, _) = split(a);
        let (_tb, mut b1, mut b2) = split(b);
        ta.send(PLUGIN_SERVICE_CONN, &[1, 2, 3])
            .await
            .expect("send");
        ta.send(RUNTIME_SERVICE_CONN, &[9; 5000])
            .await
            .expect("send");
        ta.send(PLUGIN_SERVICE_CONN, &[4, 5]).await.expect("send");
        assert_eq!(b1.read_exact(4).await, Some(vec![1, 2, 3, 4]));
        assert_eq!(b2.read_exact(5000).await.map(|v| v.len()), Some(5000));
        assert_eq!(b1.read_exact(1).await, Some(vec![5]));
        ta.close().await;
        assert_eq!(b1.read_exact(1).await, None);
    }

    #[tokio::test]
    async fn close_does_not_wait_for_a_write_stuck_on_a_peer_that_stopped_reading() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let (ta, _, _) = split(a);
        let stuck = {
            let ta = ta.clone();
            // Far more than the socket buffers hold; nobody reads `_b`.
            tokio::spawn(async move { ta.send(PLUGIN_SERVICE_CONN, &vec![0u8; 16 << 20]).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!stuck.is_finished());
        tokio::time::timeout(std::time::Duration::from_secs(2), ta.close())
            .await
            .expect("close waited");
        let r = tokio::time::timeout(std::time::Duration::from_secs(2), stuck)
            .await
            .expect("the stuck write did not end")
            .expect("join");
        assert!(r.is_err());
    }
}
