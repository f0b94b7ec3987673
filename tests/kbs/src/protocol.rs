//! Every wire constant of the double, in one place.
//!
//! Protocol: Trustee's KBS attestation protocol (RCAR), version 0.4.0,
//! <https://github.com/confidential-containers/trustee/blob/main/kbs/docs/kbs_attestation_protocol.md>;
//! the behaviour mirrored is Trustee's code at 78962cd4 (`kbs/src/api_server.rs`,
//! `kbs/src/error.rs`, `kbs/src/attestation/backend.rs`, `kbs/src/jwe/mod.rs`), summarised in
//! `shared/reference/confidential.md`, "KBS protocol, RCAR".

/// The one protocol version Trustee accepts (`VersionReq` `=0.4.0`).
pub const PROTOCOL_VERSION: &str = "0.4.0";
/// How Trustee prints its version requirement in the mismatch message.
pub const VERSION_REQ_TEXT: &str = "=0.4.0";

/// Every KBS endpoint lives under this prefix; the first segment after it is the "plugin".
pub const KBS_PREFIX: &str = "/kbs/v0/";
/// The session cookie Trustee sets at `auth` and reads at `attest` and `resource`.
pub const SESSION_COOKIE: &str = "kbs-session-id";
/// Trustee's error `type` is this prefix followed by the error kind.
pub const ERROR_TYPE_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";

/// Nonce: this many random bytes, base64 standard (padded).
pub const NONCE_BYTES: usize = 32;
/// Trustee's default attestation-session timeout (`attestation.timeout`, 5 minutes).
pub const DEFAULT_SESSION_TTL_SECS: u64 = 300;
/// `jsonwebtoken`'s default `exp` leeway, which Trustee's token verifier keeps.
pub const DEFAULT_TOKEN_LEEWAY_SECS: u64 = 60;

/// Resource JWE key management: ECDH-ES with Concat KDF, CEK wrapped with AES-256-KW.
pub const JWE_ALG: &str = "ECDH-ES+A256KW";
/// Resource JWE content encryption.
pub const JWE_ENC: &str = "A256GCM";
/// The only curve the double encrypts to (Trustee also does P-521 and RSA).
pub const EC_CURVE: &str = "P-256";
pub const EC_KTY: &str = "EC";

/// TEE names of `kbs-types` 0.18 `Tee` (serde names); `auth` refuses any other.
pub const TEES: &[&str] = &[
    "az-snp-vtpm",
    "az-tdx-vtpm",
    "nvidia",
    "sgx",
    "snp",
    "tdx",
    "cca",
    "csv",
    "se",
    "hygondcu",
    "nvidia-dpu",
    "nvidiadpu",
    "tpm",
    "sample",
    "sampledevice",
];

/// The reason Trustee gives with `authorization_mode = DenyAll` (the double takes no
/// admin requests on the KBS API: resources are files, the policy is a file).
pub const ADMIN_DENY_REASON: &str = "Admin access denied as DenyAll authorization_mode is enabled";

/// Largest request body read (Trustee's default `payload_request_size` is 2 MiB).
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// Largest request head (request line + headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Sessions kept at most; the oldest is dropped beyond that.
pub const MAX_SESSIONS: usize = 10_000;
