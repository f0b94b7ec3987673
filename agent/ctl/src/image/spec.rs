//! Host-side protocol constants for image encryption, in one place. The guest's decrypter
//! (`cocoon-image-pull`'s `spec`) uses the same names; host tools do not link it.
//!
//! Sources: ocicrypt [spec/spec.go](https://github.com/containers/ocicrypt/blob/main/spec/spec.go),
//! [docs/spec.md](https://github.com/containers/ocicrypt/blob/main/docs/spec.md),
//! [docs/keyprovider.md](https://github.com/containers/ocicrypt/blob/main/docs/keyprovider.md),
//! [blockcipher/blockcipher.go](https://github.com/containers/ocicrypt/blob/main/blockcipher/blockcipher.go)
//! and [keywrap/keyprovider/keyprovider.go](https://github.com/containers/ocicrypt/blob/main/keywrap/keyprovider/keyprovider.go);
//! CoCo's annotation packet: guest-components
//! [coco_keyprovider/src/enc_mods/mod.rs](https://github.com/confidential-containers/guest-components/blob/main/attestation-agent/coco_keyprovider/src/enc_mods/mod.rs)
//! (writer) and
//! [confidential-data-hub/hub/src/image/annotation_packet/](https://github.com/confidential-containers/guest-components/tree/main/confidential-data-hub/hub/src/image/annotation_packet)
//! (reader); the OCI image-spec
//! [media types](https://github.com/opencontainers/image-spec/blob/main/media-types.md)
//! and [image layout](https://github.com/opencontainers/image-spec/blob/main/image-layout.md).

/// Uncompressed OCI layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip-compressed OCI layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Zstd-compressed OCI layer (upstream image-rs has no `+zstd+encrypted`; ours has).
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Non-distributable uncompressed layer.
pub const MEDIA_TYPE_ND_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// Non-distributable gzip layer.
pub const MEDIA_TYPE_ND_TAR_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// Non-distributable zstd layer.
pub const MEDIA_TYPE_ND_TAR_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker's gzip layer (manifest v2 schema 2); encrypting converts it to the OCI type.
pub const MEDIA_TYPE_DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's foreign gzip layer; encrypting converts it to the non-distributable OCI type.
pub const MEDIA_TYPE_DOCKER_FOREIGN_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Suffix ocicrypt appends to a layer media type once the layer is encrypted.
pub const ENCRYPTED_SUFFIX: &str = "+encrypted";

/// OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest v2 schema 2 (containers/image turns it into OCI when encrypting).
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The tag annotation of an `index.json` entry.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Public options: base64 of `{"cipher":..,"hmac":..,"cipheroptions":{}}`.
pub const ANNOTATION_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// JWE-wrapped private options (not written by these tools).
pub const ANNOTATION_KEYS_JWE: &str = "org.opencontainers.image.enc.keys.jwe";
/// Prefix of key-provider annotations (`...provider.<name>`): CoCo annotation packets.
pub const ANNOTATION_KEYS_PROVIDER_PREFIX: &str = "org.opencontainers.image.enc.keys.provider.";
/// The provider name CoCo uses (ocicrypt.conf key, annotation suffix, `Parameters` key).
pub const DEFAULT_PROVIDER_NAME: &str = "attestation-agent";

/// The only layer cipher ocicrypt defines.
pub const CIPHER_AES_256_CTR_HMAC_SHA256: &str = "AES_256_CTR_HMAC_SHA256";
/// The cipher option holding the 16-byte CTR nonce (in the private options).
pub const CIPHER_OPTION_NONCE: &str = "nonce";

/// CoCo annotation packet wrap type (AES-256-GCM, `wrapped_data` = ciphertext‖tag, 12-byte iv).
pub const PACKET_WRAP_TYPE_A256GCM: &str = "A256GCM";
/// The other wrap type upstream's reader knows (AES-256-CTR, no integrity): never written.
pub const PACKET_WRAP_TYPE_A256CTR: &str = "A256CTR";
/// Scheme of KBS resource URIs in annotation packets' `kid`.
pub const KBS_URI_PREFIX: &str = "kbs://";

/// ocicrypt keyprovider protocol operations.
pub const OP_KEYWRAP: &str = "keywrap";
/// See [`OP_KEYWRAP`].
pub const OP_KEYUNWRAP: &str = "keyunwrap";
