//! The confidential side of the guest: attestation against a KBS and what it unlocks.
//!
//! This crate will own the KBS client (Trustee's RCAR handshake, protocol 0.4.0, with a
//! token cache), resource retrieval and JWE unwrapping, sealed-secret unsealing into a
//! tmpfs, initdata parsing, and the workload-facing REST API on `127.0.0.1:8006`. It uses
//! `cocoon-attester` for evidence and knows nothing of containers or images.
