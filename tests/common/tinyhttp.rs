//! A tiny HTTP server (a fake token endpoint or webhook) and its helpers.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A request as [`TinyHttp`] saw it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub enum HttpBody {
    Bytes(Vec<u8>),
    /// `len` bytes of `{`, written until done or the client goes away; with or without a
    /// `Content-Length` (without: the end of the body is the end of the connection).
    Endless {
        len: u64,
        content_length: bool,
    },
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: HttpBody,
}

impl HttpResponse {
    pub fn json(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: HttpBody::Bytes(body.as_bytes().to_vec()),
        }
    }
}

/// A minimal HTTP/1.1 server for registries that misbehave on purpose (one thread per
/// connection, one request per connection). It records every request and counts the endless
/// bodies it managed to write in full.
pub struct TinyHttp {
    pub port: u16,
    pub requests: Arc<std::sync::Mutex<Vec<HttpRequest>>>,
    pub endless_completed: Arc<AtomicU64>,
}

impl TinyHttp {
    pub fn start(
        handler: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
    ) -> TinyHttp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let endless_completed = Arc::new(AtomicU64::new(0));
        let handler = Arc::new(handler);
        let (reqs, done) = (requests.clone(), endless_completed.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (handler, reqs, done) = (handler.clone(), reqs.clone(), done.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(conn, &*handler, &reqs, &done);
                });
            }
        });
        TinyHttp {
            port,
            requests,
            endless_completed,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(
    mut conn: std::net::TcpStream,
    handler: &(dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync),
    reqs: &std::sync::Mutex<Vec<HttpRequest>>,
    done: &AtomicU64,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let req = HttpRequest {
        method,
        target,
        headers,
        body,
    };
    reqs.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &resp.body {
        HttpBody::Bytes(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        HttpBody::Endless {
            len,
            content_length: true,
        } => head.push_str(&format!("Content-Length: {len}\r\n")),
        HttpBody::Endless { .. } => {}
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    match resp.body {
        HttpBody::Bytes(b) => conn.write_all(&b)?,
        HttpBody::Endless { len, .. } => {
            let chunk = [b'{'; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
                conn.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    conn.flush()
}

/// Sends `req` on to the registry on `port` (HTTP/1.0, so the answer ends with the connection)
/// and returns its answer, keeping the headers a client needs.
pub fn forward(port: u16, req: &HttpRequest) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let accept = req.header("accept").unwrap_or("*/*");
    write!(
        s,
        "{} {} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n\r\n",
        req.method, req.target
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| {
            ["content-type", "docker-content-digest"]
                .contains(&k.trim().to_ascii_lowercase().as_str())
        })
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status: status.parse().unwrap(),
        headers,
        body: HttpBody::Bytes(raw[split + 4..].to_vec()),
    }
}

/// `application/x-www-form-urlencoded` pairs, decoded.
pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}
