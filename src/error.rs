//! Error kinds shared by the domain modules.
//!
//! Each module has its own `thiserror` enum; every one of them says which [`Kind`] it is, and the
//! API layer (`cri::error`) maps a kind to a gRPC code. The domain never sees tonic types.

/// What kind of failure an error is, independent of the transport that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    DeadlineExceeded,
    Aborted,
    Unavailable,
    DataLoss,
    Unimplemented,
    Internal,
}

/// Implemented by every domain error.
pub trait ErrorKind {
    fn kind(&self) -> Kind;
}
