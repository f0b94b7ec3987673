//! Pulling OCI images inside the guest.
//!
//! This crate will own the registry client, ocicrypt layer decryption (JWE and CoCo
//! key-provider annotations, `AES_256_CTR_HMAC_SHA256`), decompression, digest
//! verification of every blob before anything becomes visible, and tar unpacking with
//! overlay whiteouts into a rootfs. It asks for layer keys through a small trait that the
//! agent implements with the KBS client; it knows neither the agent nor the KBS.
