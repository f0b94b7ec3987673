//! `cocoon-test-kbs`: a stand-in for Trustee's KBS that tests start as a process. Trustee
//! cannot run here, so this is a faithful double of its published RCAR protocol, version
//! 0.4.0 (`auth` → `attest` → `resource`, the `kbs-session-id` cookie, the single-use
//! nonce, the report-data binding SHA-384 over canonical JSON, resources as flattened JWE
//! `ECDH-ES+A256KW`/`A256GCM` to the attested key, Trustee's error kinds and statuses of
//! `kbs/src/error.rs` at 78962cd4), grown from the loopback double in
//! `guest-components/tests/kbs_double.rs`. It is implemented independently of the client:
//! it links no guest crate and has its own JWE, canonical JSON, JWT and sample verifier
//! (RustCrypto crates at guest-components' versions), so it really checks the client. It
//! adds what tests need and Trustee has not: resources from a directory, a simple
//! allow/deny policy file, injected faults and counters under `/test/`, and optional
//! HTTPS (rustls). Test-only: never shipped in the guest image.

pub mod canon;
pub mod error;
pub mod http;
pub mod jwe;
pub mod kbs;
pub mod policy;
pub mod protocol;
pub mod snp;
pub mod token;
