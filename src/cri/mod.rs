//! The API layer: the only module that sees tonic and prost types. Each handler validates its
//! request, calls the domain, and converts the answer; `error` maps domain errors to gRPC codes.

pub mod admin;
pub mod convert;
pub mod error;
pub mod image;
pub mod metrics;
pub mod runtime;
pub mod stats;

/// Generated from the vendored `proto/runtime/v1/api.proto` (k8s.io/cri-api, see its VERSION).
pub mod api {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

/// Generated from `proto/ferrio/v1/admin.proto`: ferrio's own operator API.
pub mod admin_api {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("ferrio.admin.v1");
}

/// `AuthConfig` holds secrets (marked `debug_redact` in the proto, which prost does not honour):
/// its Debug output shows only the user name and the server.
impl std::fmt::Debug for api::AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .field("password", &"<redacted>")
            .field("auth", &"<redacted>")
            .field("identity_token", &"<redacted>")
            .field("registry_token", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn auth_config_debug_redacts_secrets() {
        let a = super::api::AuthConfig {
            username: "u".into(),
            password: "hunter2".into(),
            auth: "c2VjcmV0".into(),
            identity_token: "idtok".into(),
            registry_token: "regtok".into(),
            server_address: "r".into(),
        };
        let s = format!("{a:?}");
        for secret in ["hunter2", "c2VjcmV0", "idtok", "regtok"] {
            assert!(!s.contains(secret), "{s}");
        }
    }
}
