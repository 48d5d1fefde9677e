//! gRPC clients other than tonic's on the CRI socket: the real `grpcio` from PyPI (gRPC C-core,
//! which sends the %-encoded socket path as `:authority`) and a raw HTTP/2 client that sends the
//! raw path, as grpc-java and grpc-swift do.

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Daemon, DaemonOpts};

/// The Python with `grpcio` that `hack/setup.sh` installs.
fn python() -> std::path::PathBuf {
    std::env::var_os("FERRIO_TEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| "/var/cache/ferrio/pyenv/bin/python".into())
}

#[test]
fn grpcio_from_pypi_is_answered_on_the_socket() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    let script = common::repo_root().join("tests/clients/grpcio_version.py");
    for target in [
        format!("unix:{}", d.socket.display()),
        format!("unix://{}", d.socket.display()),
    ] {
        let out = std::process::Command::new(python())
            .arg(&script)
            .arg(&target)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (run hack/setup.sh)", python().display()));
        assert!(
            out.status.success(),
            "grpcio against {target}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let grpcio: Vec<u32> = v["grpcio"]
            .as_str()
            .unwrap()
            .split('.')
            .take(2)
            .map(|p| p.parse().unwrap())
            .collect();
        assert!(
            grpcio >= vec![1, 57],
            "a grpcio that sends the socket path as authority: {v}"
        );
        assert_eq!(v["version"], "0.1.0", "{v}");
        assert_eq!(v["runtime_name"], "ferrio", "{v}");
        assert_eq!(v["runtime_version"], env!("CARGO_PKG_VERSION"), "{v}");
        assert_eq!(v["runtime_api_version"], "v1", "{v}");
        assert_eq!(v["pods"], 0, "{v}");
    }
}

/// One HTTP/2 frame.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn write_frame(s: &mut UnixStream, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let mut f = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    s.write_all(&f).unwrap();
}

fn read_frame(s: &mut UnixStream) -> Frame {
    let mut h = [0u8; 9];
    s.read_exact(&mut h).unwrap();
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).unwrap();
    Frame {
        kind: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]),
        payload,
    }
}

/// A unary gRPC message: VersionRequest{version: "v1"}.
fn version_request() -> Vec<u8> {
    let msg = b"\x0a\x02v1";
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    body.extend_from_slice(msg);
    body
}

#[test]
fn a_raw_http2_client_with_a_socket_path_as_authority_is_answered() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    write_frame(&mut s, 0x4, 0, 0, &[]);
    let mut enc = loona_hpack::Encoder::new();
    let padding = 7u8;
    // Stream 1: the raw path (grpc-java), in one HEADERS frame. Stream 3: the %-encoded path
    // (C-core), padded, with a priority, cut into HEADERS and two CONTINUATIONs, and a big
    // metadata value; the encoder indexes, so stream 3 refers to entries stream 1 made.
    let authorities = [d.socket.display().to_string(), {
        let p = d.socket.display().to_string();
        p.trim_start_matches('/').replace('/', "%2F")
    }];
    for (i, authority) in authorities.iter().enumerate() {
        let stream = 1 + 2 * u32::try_from(i).unwrap();
        let big = "x".repeat(3000);
        let mut headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority.as_bytes()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        if i == 1 {
            headers.push((b"x-big", big.as_bytes()));
        }
        let block = enc.encode(headers);
        if i == 0 {
            write_frame(&mut s, 0x1, 0x4, stream, &block);
        } else {
            let (a, rest) = block.split_at(block.len() / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            let mut first = vec![padding];
            first.extend_from_slice(&[0, 0, 0, 0, 15]); // depends on stream 0, weight 16
            first.extend_from_slice(a);
            first.extend(std::iter::repeat_n(0u8, padding as usize));
            write_frame(&mut s, 0x1, 0x8 | 0x20, stream, &first);
            write_frame(&mut s, 0x9, 0, stream, b);
            write_frame(&mut s, 0x9, 0x4, stream, c);
        }
        write_frame(&mut s, 0x0, 0x1, stream, &version_request());
    }

    let mut dec = loona_hpack::Decoder::new();
    let mut data: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let mut status: std::collections::HashMap<u32, String> = Default::default();
    while status.len() < 2 {
        let f = read_frame(&mut s);
        match f.kind {
            0x0 => data.entry(f.stream).or_default().extend(f.payload),
            0x1 => {
                assert_ne!(f.flags & 0x4, 0, "the test reads no CONTINUATION");
                for (n, v) in dec.decode(&f.payload).unwrap() {
                    if n == b"grpc-status" {
                        status.insert(f.stream, String::from_utf8(v).unwrap());
                    }
                }
            }
            0x3 => panic!(
                "stream {} reset with code {:?}: {}",
                f.stream,
                f.payload,
                d.log_text()
            ),
            0x4 if f.flags & 1 == 0 => write_frame(&mut s, 0x4, 0x1, 0, &[]),
            0x7 => panic!("GOAWAY {:?}", f.payload),
            _ => {}
        }
    }
    for stream in [1, 3] {
        assert_eq!(status[&stream], "0", "stream {stream}");
        let body = &data[&stream];
        assert!(
            body.windows(6).any(|w| w == b"ferrio"),
            "stream {stream}: {body:?}"
        );
    }
}
