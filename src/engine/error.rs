//! The engine's error: a kind (→ gRPC code) and a message that keeps the cause.

use crate::error::{ErrorKind, Kind};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub kind: Kind,
    pub message: String,
}

impl ErrorKind for EngineError {
    fn kind(&self) -> Kind {
        self.kind
    }
}

impl EngineError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        EngineError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, m)
    }
    pub fn precondition(m: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(Kind::Internal, m)
    }
    /// An I/O failure, with what was being done.
    pub fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> EngineError {
        move |e| EngineError::internal(format!("{context}: {e}"))
    }
}

impl From<crate::spec::SpecError> for EngineError {
    fn from(e: crate::spec::SpecError) -> Self {
        EngineError::new(e.kind(), e.to_string())
    }
}

impl From<crate::image::ImageError> for EngineError {
    fn from(e: crate::image::ImageError) -> Self {
        EngineError::new(e.kind(), e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
