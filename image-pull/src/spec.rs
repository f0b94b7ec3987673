//! Protocol constants: media types, annotation names, cipher names, whiteouts.
//!
//! Sources: the OCI image-spec
//! ([media types](https://github.com/opencontainers/image-spec/blob/main/media-types.md),
//! [layers and whiteouts](https://github.com/opencontainers/image-spec/blob/main/layer.md)),
//! ocicrypt ([spec/spec.go](https://github.com/containers/ocicrypt/blob/main/spec/spec.go),
//! [docs/spec.md](https://github.com/containers/ocicrypt/blob/main/docs/spec.md),
//! [docs/keyprovider.md](https://github.com/containers/ocicrypt/blob/main/docs/keyprovider.md))
//! and Docker's image manifest v2 schema 2.

/// Uncompressed OCI layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip-compressed OCI layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Zstd-compressed OCI layer.
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Non-distributable variants (deprecated in image-spec 1.1 but still valid).
pub const MEDIA_TYPE_ND_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// Non-distributable gzip layer.
pub const MEDIA_TYPE_ND_TAR_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// Non-distributable zstd layer.
pub const MEDIA_TYPE_ND_TAR_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker's gzip layer (manifest v2 schema 2).
pub const MEDIA_TYPE_DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's foreign (non-distributable) gzip layer.
pub const MEDIA_TYPE_DOCKER_FOREIGN_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Suffix ocicrypt appends to a layer media type once the layer is encrypted.
pub const ENCRYPTED_SUFFIX: &str = "+encrypted";

/// Public options: base64 of `{"cipher":..,"hmac":..,"cipheroptions":{}}`.
pub const ANNOTATION_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// JWE-wrapped private options, comma-separated base64 of JWE JSON serialisations.
pub const ANNOTATION_KEYS_JWE: &str = "org.opencontainers.image.enc.keys.jwe";
/// Prefix of key-provider annotations (`...provider.<name>`); CoCo annotation packets.
pub const ANNOTATION_KEYS_PROVIDER_PREFIX: &str = "org.opencontainers.image.enc.keys.provider.";

/// The only layer cipher ocicrypt defines.
pub const CIPHER_AES_256_CTR_HMAC_SHA256: &str = "AES_256_CTR_HMAC_SHA256";
/// The cipher option holding the 16-byte CTR nonce (in the private options).
pub const CIPHER_OPTION_NONCE: &str = "nonce";

/// JWE key management algorithms ocicrypt's JWE key wrapper produces (RFC 7518 §4).
pub const JWE_ALG_RSA_OAEP: &str = "RSA-OAEP";
/// RSA-OAEP with SHA-256 and MGF1-SHA-256.
pub const JWE_ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
/// ECDH-ES with Concat KDF and AES-256 key wrap.
pub const JWE_ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
/// JWE content encryption ocicrypt uses.
pub const JWE_ENC_A256GCM: &str = "A256GCM";

/// CoCo annotation packet wrap type (AES-256-GCM, `wrapped_data` = ciphertext‖tag).
pub const PACKET_WRAP_TYPE_A256GCM: &str = "A256GCM";
/// Scheme of KBS resource URIs in annotation packets' `kid`.
pub const KBS_URI_PREFIX: &str = "kbs://";

/// Whiteout file prefix (image-spec layer.md "Whiteouts").
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Opaque whiteout marker.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// The overlayfs xattr that makes a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// PAX record prefix of extended attributes (GNU tar / star convention).
pub const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
