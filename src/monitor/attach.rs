//! The monitor's attach side, where nothing blocks: attach clients and the container's stdin
//! (its pipe, or the terminal's master) are non-blocking, and what one side cannot take yet
//! waits in a bounded buffer.
//!
//! - Stdin a container does not read waits in [`StdinBuffer`] (at most [`STDIN_BUFFER`] and one
//!   read more); while it is full the monitor stops reading attachers, so a sender is slowed by
//!   its own socket, and the monitor goes on pumping output and answering requests.
//! - Output an attacher does not take waits in its queue; one more than [`ATTACH_BACKLOG`]
//!   behind is dropped (the CRI log has everything).

use super::proto;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Stdin held for a container that has not read it yet.
pub const STDIN_BUFFER: usize = 256 << 10;
/// Output an attacher may be behind before it is dropped.
pub const ATTACH_BACKLOG: usize = 4 << 20;

/// Puts `fd` in non-blocking mode.
pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

/// One attach client.
pub struct Attacher {
    pub conn: UnixStream,
    /// The bytes of a frame not complete yet.
    input: Vec<u8>,
    /// Frames not written yet.
    output: Vec<u8>,
}

impl Attacher {
    pub fn new(conn: UnixStream) -> io::Result<Attacher> {
        conn.set_nonblocking(true)?;
        Ok(Attacher {
            conn,
            input: Vec::new(),
            output: Vec::new(),
        })
    }

    /// Output waits for the client.
    pub fn behind(&self) -> bool {
        !self.output.is_empty()
    }

    /// Reads what the client sent; each whole frame goes to `frame`. False: the client is gone
    /// (closed, failed, or sent a frame that does not parse).
    pub fn read(&mut self, buf: &mut [u8], mut frame: impl FnMut(u8, &[u8])) -> bool {
        let n = match self.conn.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return true
            }
            Err(_) => return false,
        };
        self.input.extend_from_slice(&buf[..n]);
        let mut at = 0;
        let alive = loop {
            match proto::parse_attach_frame(&self.input[at..]) {
                Ok(Some((kind, data, used))) => {
                    frame(kind, data);
                    at += used;
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        self.input.drain(..at);
        alive
    }

    /// Queues `frame` and writes what the client takes now. False: it is too far behind, or
    /// gone.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        if self.output.len() + frame.len() > ATTACH_BACKLOG {
            return false;
        }
        self.output.extend_from_slice(frame);
        self.flush()
    }

    /// Writes what the client takes now. False: it is gone.
    pub fn flush(&mut self) -> bool {
        let mut done = 0;
        let alive = loop {
            if done == self.output.len() {
                break true;
            }
            match self.conn.write(&self.output[done..]) {
                Ok(0) => break false,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        };
        self.output.drain(..done);
        alive
    }

    /// The container is gone: what is queued gets `timeout` to reach the client.
    pub fn finish(mut self, timeout: Duration) {
        if self.output.is_empty()
            || self.conn.set_nonblocking(false).is_err()
            || self.conn.set_write_timeout(Some(timeout)).is_err()
        {
            return;
        }
        let _ = self.conn.write_all(&self.output);
        self.output.clear();
    }
}

/// What the container's stdin has not taken yet.
#[derive(Default)]
pub struct StdinBuffer {
    pending: Vec<u8>,
}

/// Why stdin can take no more.
#[derive(Debug, PartialEq, Eq)]
pub struct ReaderGone;

impl StdinBuffer {
    /// No more is read from attachers until the container takes some.
    pub fn full(&self) -> bool {
        self.pending.len() >= STDIN_BUFFER
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Queues `data` for `fd` and writes what it takes now.
    pub fn push(&mut self, fd: &OwnedFd, data: &[u8]) -> Result<(), ReaderGone> {
        self.pending.extend_from_slice(data);
        self.flush(fd)
    }

    /// Writes what `fd` takes now. Err: nobody reads it any more (what waited is dropped).
    pub fn flush(&mut self, fd: &OwnedFd) -> Result<(), ReaderGone> {
        let mut done = 0;
        let result = loop {
            if done == self.pending.len() {
                break Ok(());
            }
            match nix::unistd::write(fd, &self.pending[done..]) {
                Ok(0) => break Ok(()),
                Ok(n) => done += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break Ok(()),
                Err(_) => break Err(ReaderGone),
            }
        };
        if result.is_err() {
            self.pending.clear();
        } else {
            self.pending.drain(..done);
        }
        result
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn stdin_nobody_reads_is_held_up_to_the_bound_and_never_blocks() {
        let (r, w) = pipe();
        set_nonblocking(&w).unwrap();
        let mut s = StdinBuffer::default();
        let chunk = vec![b'x'; 32 << 10];
        let mut pushes = 0;
        while !s.full() {
            s.push(&w, &chunk).unwrap();
            pushes += 1;
            assert!(pushes < 100, "the buffer fills");
        }
        // The pipe holds 64 KiB; the rest waits, bounded.
        assert!(s.pending.len() <= STDIN_BUFFER + chunk.len());
        // The reader takes it all in the end.
        set_nonblocking(&r).unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 64 << 10];
        while !s.is_empty() || got < pushes * chunk.len() {
            if let Ok(n) = nix::unistd::read(r.as_raw_fd(), &mut buf) {
                got += n;
            }
            s.flush(&w).unwrap();
        }
        assert_eq!(got, pushes * chunk.len());
    }

    #[test]
    fn stdin_whose_reader_left_is_dropped() {
        let (r, w) = pipe();
        set_nonblocking(&w).unwrap();
        drop(r);
        let mut s = StdinBuffer::default();
        assert_eq!(s.push(&w, b"hello"), Err(ReaderGone));
        assert!(s.is_empty());
    }

    #[test]
    fn an_attacher_that_takes_nothing_is_dropped_once_too_far_behind() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut a = Attacher::new(ours).unwrap();
        let frame = proto::attach_frame(proto::ATTACH_STDOUT, &[b'o'; 32 << 10]);
        let mut sent = 0;
        while a.send(&frame) {
            sent += frame.len();
            assert!(sent <= ATTACH_BACKLOG + (1 << 20), "dropped in time");
        }
        assert!(a.behind());
        drop(theirs);
    }

    #[test]
    fn frames_split_across_reads_are_put_together() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut a = Attacher::new(ours).unwrap();
        let frame = proto::attach_frame(proto::ATTACH_STDIN, b"hello");
        let (x, y) = frame.split_at(3);
        let mut buf = vec![0u8; 1024];
        let mut got = Vec::new();
        theirs.write_all(x).unwrap();
        assert!(a.read(&mut buf, |k, d| got.push((k, d.to_vec()))));
        assert!(got.is_empty());
        theirs.write_all(y).unwrap();
        theirs.write_all(&frame).unwrap();
        while got.len() < 2 {
            assert!(a.read(&mut buf, |k, d| got.push((k, d.to_vec()))));
        }
        assert_eq!(got[0], (proto::ATTACH_STDIN, b"hello".to_vec()));
        assert_eq!(got[1], got[0]);
        drop(theirs);
        let mut alive = true;
        for _ in 0..10 {
            alive = a.read(&mut buf, |_, _| {});
            if !alive {
                break;
            }
        }
        assert!(!alive, "EOF: gone");
    }
}
