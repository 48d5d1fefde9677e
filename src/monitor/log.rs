//! The CRI log format kubelet and `crictl logs` read:
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n`.
//!
//! Every complete line is written with `F`. Bytes that end a read without a newline are written
//! at once with `P` (a partial line: the rest follows in later records), as are pieces of a line
//! longer than [`MAX_LINE`], so a container that never prints a newline cannot make the monitor
//! buffer without bound.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The longest content of one record; longer lines are split into partial records.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Formats the records for one chunk of output read from `stream` at `timestamp`.
pub fn format_chunk(out: &mut Vec<u8>, timestamp: &str, stream: Stream, chunk: &[u8]) {
    let mut rest = chunk;
    while !rest.is_empty() {
        let (piece, full, consumed) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) if i <= MAX_LINE => (&rest[..i], true, i + 1),
            _ if rest.len() > MAX_LINE => (&rest[..MAX_LINE], false, MAX_LINE),
            _ => (rest, false, rest.len()),
        };
        out.extend_from_slice(timestamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.name().as_bytes());
        out.extend_from_slice(if full { b" F " } else { b" P " });
        out.extend_from_slice(piece);
        out.push(b'\n');
        rest = &rest[consumed..];
    }
}

/// RFC 3339 with nanoseconds, UTC: `2026-11-27T10:00:00.123456789Z`.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The open log file of one container; reopened on request after kubelet rotates it.
pub struct CriLog {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
}

impl CriLog {
    /// Opens (creating) the log at `path`; an empty path means no log.
    pub fn open(path: &Path) -> io::Result<CriLog> {
        let mut l = CriLog {
            path: path.to_path_buf(),
            file: None,
            buf: Vec::new(),
        };
        l.reopen()?;
        Ok(l)
    }

    pub fn reopen(&mut self) -> io::Result<()> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("opening log {}: {e}", self.path.display()),
                )
            })?;
        self.file = Some(f);
        Ok(())
    }

    pub fn write(&mut self, stream: Stream, chunk: &[u8]) {
        let Some(f) = self.file.as_mut() else { return };
        self.buf.clear();
        format_chunk(&mut self.buf, &timestamp_now(), stream, chunk);
        // A full disk must not stop the container: the write error is dropped, as conmon does.
        let _ = f.write_all(&self.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(chunk: &[u8]) -> String {
        let mut out = Vec::new();
        format_chunk(&mut out, "T", Stream::Stdout, chunk);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn full_and_partial_lines() {
        assert_eq!(fmt(b"a\nb\n"), "T stdout F a\nT stdout F b\n");
        assert_eq!(fmt(b"a\npart"), "T stdout F a\nT stdout P part\n");
        assert_eq!(fmt(b"\n"), "T stdout F \n");
        assert_eq!(fmt(b""), "");
        let mut out = Vec::new();
        format_chunk(&mut out, "T", Stream::Stderr, b"x\n");
        assert_eq!(out, b"T stderr F x\n");
    }

    #[test]
    fn long_lines_are_split() {
        let mut line = vec![b'x'; MAX_LINE * 2 + 10];
        line.push(b'\n');
        let s = fmt(&line);
        let recs: Vec<&str> = s.lines().collect();
        assert_eq!(recs.len(), 3);
        assert!(recs[0].starts_with("T stdout P ") && recs[0].len() == 11 + MAX_LINE);
        assert!(recs[1].starts_with("T stdout P "));
        assert_eq!(recs[2], format!("T stdout F {}", "x".repeat(10)));
    }

    #[test]
    fn timestamp_is_rfc3339_nano() {
        let t = timestamp_now();
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
        assert!(t.ends_with('Z') && t.len() == 30, "{t}");
    }
}
