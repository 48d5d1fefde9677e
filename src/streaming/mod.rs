//! Streaming for Exec, Attach and PortForward (issue 6). So far only the SPDY/3.1 framing layer
//! that Kubernetes' clients (kubectl, crictl, critest) speak after the HTTP/1.1 upgrade; the HTTP
//! server, the remotecommand / portforward protocols and WebSocket come later.

pub mod spdy;
