//! The Kubernetes WebSocket channel protocol (k8s.io/apimachinery wsstream): each binary
//! message is one byte of channel number followed by data. Channels for exec: 0 stdin,
//! 1 stdout, 2 stderr, 3 error (a metav1.Status JSON), 4 resize; v5 adds 255 "close", whose
//! payload is the channel the client closes. Port-forward: channels 2i (data) and 2i+1 (error)
//! for the i-th port, each starting with the port number as two little-endian bytes.

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";

/// A message on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// Splits a message into its channel and data; None for an empty message.
pub fn split(msg: &[u8]) -> Option<(u8, &[u8])> {
    msg.split_first().map(|(c, d)| (*c, d))
}

/// The first protocol of `offered` (the client's `Sec-WebSocket-Protocol` list) that we serve.
pub fn choose<'a>(offered: &str, served: &[&'a str]) -> Option<&'a str> {
    offered
        .split(',')
        .map(str::trim)
        .find_map(|p| served.iter().find(|s| **s == p).copied())
}

/// The metav1.Status JSON the error channel carries when the command has ended.
pub fn exit_status(code: i32) -> String {
    if code == 0 {
        r#"{"metadata":{},"status":"Success"}"#.to_string()
    } else {
        serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
        .to_string()
    }
}

/// A Status for an error before or while running the command.
pub fn error_status(message: &str) -> String {
    serde_json::json!({"metadata": {}, "status": "Failure", "message": message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_protocols() {
        assert_eq!(frame(STDOUT, b"hi"), vec![1, b'h', b'i']);
        assert_eq!(split(&[2, b'x']), Some((2, &b"x"[..])));
        assert_eq!(split(&[]), None);
        assert_eq!(
            choose("v4.channel.k8s.io, v5.channel.k8s.io", &[V5, V4]),
            Some(V4)
        );
        assert_eq!(choose("base64.channel.k8s.io", &[V5, V4]), None);
    }

    #[test]
    fn statuses() {
        let v: serde_json::Value = serde_json::from_str(&exit_status(3)).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value = serde_json::from_str(&exit_status(0)).unwrap();
        assert_eq!(v["status"], "Success");
    }
}
