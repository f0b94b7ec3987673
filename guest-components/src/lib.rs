//! The confidential side of the guest: attestation against a KBS and what it unlocks.
//!
//! This crate owns the KBS client ([`KbsClient`]): Trustee's RCAR handshake, protocol
//! 0.4.0 ([`kbs::protocol`], wire constants and request shapes in one place), with one
//! session reused across resources and a single re-handshake when the KBS says the
//! session or token is bad; the report-data binding of nonce and TEE key ([`binding`],
//! SHA-384 of the RFC 8785 canonical runtime data); the per-session EC P-256 TEE key
//! ([`tee_key`]); and resource JWE unwrapping
//! (`ECDH-ES+A256KW` + `A256GCM`, [`jwe`]) into zeroized buffers. Evidence comes through
//! the [`EvidenceProvider`] seam, implemented for `cocoon_attester::Attester`.
//! [`KbsService`] ([`kbs::service`]) is the agent-wide, thread-safe form of it: one
//! attestation shared by every caller until the token's `exp`, single-flight handshakes,
//! bounded retries with a deadline, errors labelled by [`Error::reason`], Prometheus
//! counters ([`KbsMetrics`]) and `audit` records; [`KbsClient`] wraps it for one owner.
//!
//! [`ResourceSource`] ([`resource`]) is the one seam through which secrets are fetched.
//! [`sealed`] verifies (ES256) and unseals CoCo sealed secrets (`sealed.<h>.<p>.<s>`).
//! [`rest`] serves the workload-facing REST API (upstream's api-server-rest, normally on
//! `127.0.0.1:8006`) to loopback peers.
//!
//! The agent does the rest (the per-container secrets tmpfs, initdata, image keys
//! through this crate's KBS session): this crate knows nothing of containers or images.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cocoon_guest_components::KbsClient;
//! let attester = cocoon_attester::Attester::sample();
//! let mut kbs = KbsClient::new("http://10.0.2.2:8080", attester)?;
//! let key = kbs.get_resource("kbs:///default/key/1")?; // Zeroizing<Vec<u8>>
//! # let _ = key;
//! # Ok(())
//! # }
//! ```

// Guest code: a panic here takes the agent (PID 1) and the VM down. Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod binding;
pub mod error;
pub mod jwe;
pub mod kbs;
pub mod resource;
pub mod rest;
pub mod sealed;
pub mod tee_key;

pub use error::{BoxError, Error, JweError};
pub use kbs::protocol::{ResourcePath, PROTOCOL_VERSION};
pub use kbs::service::{KbsMetrics, KbsService, KbsSettings, RetryPolicy};
pub use kbs::{EvidenceProvider, KbsClient};
pub use resource::ResourceSource;
pub use tee_key::TeeKey;
