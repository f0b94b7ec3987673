//! The agent's request errors and their one mapping to ttrpc status codes.

use ttrpc::Code;

/// Why a request failed. Every variant says which object or field was wrong.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id:?} already exists")]
    AlreadyExists { what: &'static str, id: String },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
    /// The runtime retries UpdateInterface on this text: keep `Link not found`.
    #[error("Link not found ({0})")]
    LinkNotFound(String),
    /// A sealed secret could not be unsealed: names the secret (env name or file),
    /// never its value.
    #[error("secret {what}: {reason}")]
    Secret { what: String, reason: String },
    /// A guest image pull failed: names the image (and the layer, and what failed).
    #[error("{0}")]
    Image(String),
    /// What the request needs is not there right now (upstream's TtyWinResize on a
    /// process without a terminal: `UNAVAILABLE "no tty"`).
    #[error("{0}")]
    Unavailable(String),
}

impl AgentError {
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        AgentError::NotFound {
            what,
            id: id.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> Self {
        AgentError::InvalidArgument {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        AgentError::Internal(format!("{context}: {e}"))
    }

    pub fn code(&self) -> Code {
        match self {
            AgentError::NotFound { .. } | AgentError::LinkNotFound(_) => Code::NOT_FOUND,
            AgentError::AlreadyExists { .. } => Code::ALREADY_EXISTS,
            AgentError::InvalidArgument { .. } => Code::INVALID_ARGUMENT,
            AgentError::FailedPrecondition(_)
            | AgentError::Secret { .. }
            | AgentError::Image(_) => Code::FAILED_PRECONDITION,
            AgentError::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            AgentError::PermissionDenied(_) => Code::PERMISSION_DENIED,
            AgentError::Unavailable(_) => Code::UNAVAILABLE,
            AgentError::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<AgentError> for ttrpc::Error {
    fn from(e: AgentError) -> Self {
        crate::rpc::status(e.code(), e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, AgentError>;
