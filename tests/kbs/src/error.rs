//! Trustee's error answers: kind, status and `detail` text as Trustee's `kbs/src/error.rs`
//! produces them.
//!
//! Trustee answers 404 only for `InvalidRequestPath` and `PluginNotFound` and 401 for every
//! other error. `detail` is the error's `Display`, which for most kinds does *not* include
//! the underlying cause (`PluginInternalError` is always "Plugin internal error", whether
//! the resource is missing or the path is malformed).

use serde::Serialize;

use crate::protocol::{ADMIN_DENY_REASON, ERROR_TYPE_PREFIX};

/// One error answer of the KBS API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KbsError {
    /// `auth` failed (bad body, bad or other version): `RcarAuthFailed` inside
    /// `AttestationError`; the cause is part of the text.
    #[error("Attestation error: RCAR handshake Auth failed: {0}")]
    AuthFailed(String),
    /// `attest` failed for any reason; Trustee does not show the cause (kept here for the
    /// log only, like the other causes below).
    #[error("Attestation error: RCAR handshake Attest failed")]
    AttestFailed(String),
    #[error("Plugin {0} not found")]
    PluginNotFound(String),
    #[error("Plugin internal error")]
    PluginInternalError(String),
    #[error("Access denied by policy")]
    PolicyDeny,
    #[error("Attestation Token not found")]
    TokenNotFound(String),
    #[error("Token Verifier error")]
    TokenVerifierError(String),
    #[error("JWE failed")]
    JweError(String),
    /// Admin endpoints of the KBS API (`resource-policy`, ...), as with `DenyAll`.
    #[error("admin access denied for endpoint {0}: Admin access denied: {ADMIN_DENY_REASON}")]
    AdminAuthAccess(String),
    /// `POST`/`DELETE` of a resource: Trustee's `?` turns the admin error into this kind.
    #[error(
        "failed to initialize [admin] configuration: Admin access denied: {ADMIN_DENY_REASON}"
    )]
    AdminAuthInitialization,
    /// The `500` fault: not a Trustee answer, but shaped like one.
    #[error("injected fault: 500")]
    InjectedFault,
}

#[derive(Serialize)]
struct ErrorInformation<'a> {
    #[serde(rename = "type")]
    error_type: String,
    detail: &'a str,
}

impl KbsError {
    /// Trustee's kind name (the enum variant's name in Trustee's `Error`).
    pub fn kind(&self) -> &'static str {
        match self {
            KbsError::AuthFailed(_) | KbsError::AttestFailed(_) => "AttestationError",
            KbsError::PluginNotFound(_) => "PluginNotFound",
            KbsError::PluginInternalError(_) | KbsError::InjectedFault => "PluginInternalError",
            KbsError::PolicyDeny => "PolicyDeny",
            KbsError::TokenNotFound(_) => "TokenNotFound",
            KbsError::TokenVerifierError(_) => "TokenVerifierError",
            KbsError::JweError(_) => "JweError",
            KbsError::AdminAuthAccess(_) => "AdminAuthAccess",
            KbsError::AdminAuthInitialization => "AdminAuthInitialization",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            KbsError::PluginNotFound(_) => 404,
            KbsError::InjectedFault => 500,
            _ => 401,
        }
    }

    /// Why, where Trustee's text does not say (for the log; never sent).
    pub fn cause(&self) -> Option<&str> {
        match self {
            KbsError::AttestFailed(c)
            | KbsError::PluginInternalError(c)
            | KbsError::TokenNotFound(c)
            | KbsError::TokenVerifierError(c)
            | KbsError::JweError(c) => Some(c),
            _ => None,
        }
    }

    /// The JSON body, `{"type":"https://github.com/confidential-containers/kbs/errors/<Kind>","detail":"..."}`.
    pub fn body(&self) -> String {
        let detail = self.to_string();
        let info = ErrorInformation {
            error_type: format!("{ERROR_TYPE_PREFIX}{}", self.kind()),
            detail: &detail,
        };
        // A struct of two strings always serializes.
        serde_json::to_string(&info).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            KbsError::PolicyDeny.body(),
            r#"{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"Access denied by policy"}"#
        );
        assert_eq!(KbsError::PluginNotFound("x".into()).status(), 404);
        assert_eq!(KbsError::PluginInternalError("gone".into()).status(), 401);
        assert_eq!(
            KbsError::PluginInternalError("gone".into()).body(),
            r#"{"type":"https://github.com/confidential-containers/kbs/errors/PluginInternalError","detail":"Plugin internal error"}"#
        );
        assert_eq!(
            KbsError::AuthFailed("deserialize Request".into()).to_string(),
            "Attestation error: RCAR handshake Auth failed: deserialize Request"
        );
    }
}
