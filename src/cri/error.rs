//! Domain errors → gRPC status codes, in one place.

use crate::error::{ErrorKind, Kind};
use tonic::{Code, Status};

pub fn code(kind: Kind) -> Code {
    match kind {
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::PermissionDenied => Code::PermissionDenied,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::DeadlineExceeded => Code::DeadlineExceeded,
        Kind::Aborted => Code::Aborted,
        Kind::Unavailable => Code::Unavailable,
        Kind::DataLoss => Code::DataLoss,
        Kind::Unimplemented => Code::Unimplemented,
        Kind::Internal => Code::Internal,
    }
}

/// The status for a domain error: its kind's code and its full message.
pub fn status<E: ErrorKind + std::fmt::Display>(e: &E) -> Status {
    Status::new(code(e.kind()), e.to_string())
}

impl From<crate::image::ImageError> for Status {
    fn from(e: crate::image::ImageError) -> Status {
        status(&e)
    }
}

/// A required field that is missing or empty.
pub fn missing(field: &str) -> Status {
    invalid(format!("{field} is required"))
}

/// A request the CRI layer itself refuses (its shape, before the domain sees it).
pub fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg)
}

/// Something the domain names that is not there.
pub fn not_found(msg: impl Into<String>) -> Status {
    Status::not_found(msg)
}

/// A failure of ferrio's own (encoding an answer), never the caller's.
pub fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A subscriber that fell too far behind a stream.
pub fn exhausted(msg: impl Into<String>) -> Status {
    Status::resource_exhausted(msg)
}
