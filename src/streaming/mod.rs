//! The streaming server behind Exec, Attach and PortForward: the CRI RPCs hand out a
//! single-use URL with a short-lived token; the client opens it with an HTTP upgrade.
//!
//! Served today: WebSocket with the Kubernetes channel protocols `v5.channel.k8s.io` and
//! `v4.channel.k8s.io` for exec (stdin, stdout, stderr, the error channel carrying a Status
//! with the exit code, v5's close signal) and `v4.channel.k8s.io` for port-forward (a data
//! and an error channel per port). SPDY/3.1 upgrades are refused with a clear message until
//! the SPDY transport (`spdy/`, the framing layer, done) is wired to the server; TTY exec and attach are not served yet.

pub mod server;
pub mod spdy;
pub mod ws;

pub use server::Streaming;
