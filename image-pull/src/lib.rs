//! Pulling OCI images inside the guest: this crate owns ocicrypt layer-key unwrapping
//! (JWE recipients and CoCo key-provider annotation packets), `AES_256_CTR_HMAC_SHA256`
//! decryption, decompression, digest verification of every blob, and safe tar unpacking
//! with overlayfs whiteouts, as one streaming pipeline per layer that exposes a layer
//! only after everything verified. It asks for keys through [`KeyProvider`], which the
//! agent implements with its KBS session; it knows neither the agent nor the KBS. (The
//! registry client is [`registry`]: oci-client behind the [`registry::Registry`] trait;
//! [`image`] pulls whole images, layers in parallel, into a store keyed by `diff_id`.)

// Guest code: a panic here takes the agent (PID 1) and the VM down. Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

mod error;
pub mod image;
mod keys;
pub mod ocicrypt;
mod pipeline;
pub mod registry;
pub mod spec;
mod unpack;

pub use error::{BoxError, Failure, LayerError};
pub use image::{
    ImagePuller, LayerStore, ProcessDefaults, PullError, PullOptions, PullStats, PulledImage,
};
pub use keys::{DecryptionKey, KeyParseError, KeyProvider, NoKeys, StaticKeys};
pub use pipeline::{parse_media_type, unpack_layer, Compression, LayerDescriptor, LayerStats};
pub use unpack::UnpackOptions;
