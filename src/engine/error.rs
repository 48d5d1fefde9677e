//! The engine's error: typed variants that keep their cause as a `source` (an I/O error with
//! what was being done, the spec generator's, the image service's, another module's own), each
//! with the kind that `cri/error.rs` maps to a gRPC code. Cloneable (a create's result is handed
//! to every caller waiting for it), so causes are shared behind `Arc`.

use crate::error::{ErrorKind, Kind};
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The request is wrong (InvalidArgument), and says how.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be done in the state things are in (FailedPrecondition).
    #[error("{0}")]
    Precondition(String),
    /// A failure of ferrio's own (Internal).
    #[error("{0}")]
    Internal(String),
    /// An I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A container's monitor did not answer (Unavailable).
    #[error("the monitor of container {id} did not answer: {source}")]
    MonitorUnavailable {
        id: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error(transparent)]
    Spec(Arc<crate::spec::SpecError>),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// Another module's error, with its own kind.
    #[error("{source}")]
    Domain {
        kind: Kind,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// Any other kind, with its message (Unavailable, DeadlineExceeded, AlreadyExists, …).
    #[error("{message}")]
    Other { kind: Kind, message: String },
}

impl ErrorKind for EngineError {
    fn kind(&self) -> Kind {
        match self {
            EngineError::Invalid(_) => Kind::InvalidArgument,
            EngineError::NotFound(_) => Kind::NotFound,
            EngineError::Precondition(_) => Kind::FailedPrecondition,
            EngineError::Internal(_) | EngineError::Io { .. } => Kind::Internal,
            EngineError::MonitorUnavailable { .. } => Kind::Unavailable,
            EngineError::Spec(e) => e.kind(),
            EngineError::Image(e) => e.kind(),
            EngineError::Domain { kind, .. } | EngineError::Other { kind, .. } => *kind,
        }
    }
}

impl EngineError {
    /// The variant for `kind`, with `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        let message = message.into();
        match kind {
            Kind::InvalidArgument => EngineError::Invalid(message),
            Kind::NotFound => EngineError::NotFound(message),
            Kind::FailedPrecondition => EngineError::Precondition(message),
            Kind::Internal => EngineError::Internal(message),
            kind => EngineError::Other { kind, message },
        }
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        EngineError::Invalid(m.into())
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        EngineError::NotFound(m.into())
    }
    pub fn precondition(m: impl Into<String>) -> Self {
        EngineError::Precondition(m.into())
    }
    pub fn internal(m: impl Into<String>) -> Self {
        EngineError::Internal(m.into())
    }
    /// An I/O failure, with what was being done (for `map_err`).
    pub fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> EngineError {
        move |e| EngineError::Io {
            context: context.to_string(),
            source: Arc::new(e),
        }
    }
    /// Another module's error, its kind and its cause kept.
    pub fn domain<E>(e: E) -> Self
    where
        E: ErrorKind + std::error::Error + Send + Sync + 'static,
    {
        EngineError::Domain {
            kind: e.kind(),
            source: Arc::new(e),
        }
    }
}

impl From<crate::spec::SpecError> for EngineError {
    fn from(e: crate::spec::SpecError) -> Self {
        EngineError::Spec(Arc::new(e))
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn kinds_and_causes_are_kept() {
        let e = EngineError::io("reading x")(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.kind(), Kind::Internal);
        assert!(e.to_string().starts_with("reading x: "), "{e}");
        assert!(e.source().is_some(), "the I/O error is the source");
        assert_eq!(
            EngineError::new(Kind::Unavailable, "gone").kind(),
            Kind::Unavailable
        );
        assert!(matches!(
            EngineError::new(Kind::InvalidArgument, "x"),
            EngineError::Invalid(_)
        ));
        let img = crate::image::ImageError::InvalidArgument("bad ref".into());
        let e = EngineError::from(img);
        assert_eq!(
            (e.kind(), e.to_string()),
            (Kind::InvalidArgument, "bad ref".into())
        );
        let e = EngineError::domain(crate::stats::StatsError::CgroupNotFound("/x".into()));
        assert_eq!(e.kind(), Kind::NotFound);
        assert!(e.source().is_some());
    }
}
