//! The streaming server behind Exec, Attach and PortForward: the CRI RPCs hand out a
//! single-use URL with a short-lived token; the client opens it with an HTTP upgrade.
//!
//! Served: WebSocket with the Kubernetes channel protocols `v5.channel.k8s.io` and
//! `v4.channel.k8s.io` for exec and attach (stdin, stdout, stderr, the error channel carrying a
//! Status with the exit code, resize, v5's close signal) and `v4.channel.k8s.io` for
//! port-forward (a data and an error channel per port); SPDY/3.1 (`spdy/`) with the
//! remotecommand protocols v1 to v5 and `portforward.k8s.io`. Every session of every kind and
//! transport ends after the idle timeout with nothing moving (`idle`).

pub mod idle;
pub mod server;
pub mod session;
pub mod spdy;
pub mod ws;

pub use server::Streaming;
