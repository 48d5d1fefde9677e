use crate::error::{ErrorKind, Kind};
use std::sync::Arc;

/// Everything that can go wrong in the image service. Cloneable, so that one result can be handed
/// to every caller of a coalesced pull.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("pulling {reference}: registry {prefix} is blocked in {conf}")]
    Blocked {
        reference: String,
        prefix: String,
        conf: String,
    },
    #[error("pulling {reference}: not found: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("pulling {reference}: not authorized: {detail}")]
    Unauthenticated { reference: String, detail: String },
    #[error("pulling {reference}: {detail}")]
    Registry { reference: String, detail: String },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "pulling {reference}: no data received for {secs} s (pull_progress_timeout), pull aborted"
    )]
    Stalled { reference: String, secs: u64 },
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{0}")]
    Internal(String),
    /// The signature policy refuses the image (the message names the requirement).
    #[error("{0}")]
    Rejected(String),
    #[error("image {image} is in use by container {container}: remove the container first")]
    InUse { image: String, container: String },
}

impl ImageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

impl ErrorKind for ImageError {
    fn kind(&self) -> Kind {
        match self {
            ImageError::InvalidReference { .. } | ImageError::InvalidArgument(_) => {
                Kind::InvalidArgument
            }
            ImageError::Blocked { .. } | ImageError::Rejected(_) => Kind::PermissionDenied,
            ImageError::NotFound { .. } => Kind::NotFound,
            ImageError::Unauthenticated { .. } => Kind::Unauthenticated,
            ImageError::Registry { .. } => Kind::Unavailable,
            ImageError::DigestMismatch { .. }
            | ImageError::SizeMismatch { .. }
            | ImageError::Corrupt(_) => Kind::DataLoss,
            ImageError::Stalled { .. } => Kind::Aborted,
            ImageError::Unsupported(_) | ImageError::InUse { .. } => Kind::FailedPrecondition,
            ImageError::Io { .. } | ImageError::Internal(_) => Kind::Internal,
        }
    }
}
