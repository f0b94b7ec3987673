//! Flattened JWE (as a KBS resource answer) and JWK parsing and decryption, and the
//! image-pull private-key parser (PEM/DER).
#![no_main]

use std::sync::OnceLock;

use cocoon_guest_components::kbs::protocol::FlattenedJwe;
use cocoon_guest_components::tee_key::jwk_public_key;
use cocoon_guest_components::TeeKey;
use libfuzzer_sys::fuzz_target;

static KEY: OnceLock<TeeKey> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let key = KEY.get_or_init(TeeKey::generate);
    if let Ok(jwe) = serde_json::from_slice::<FlattenedJwe>(data) {
        let _ = cocoon_guest_components::jwe::decrypt(key, &jwe);
    }
    if let Ok(jwk) = serde_json::from_slice(data) {
        let _ = jwk_public_key(&jwk);
    }
    let _ = cocoon_image_pull::DecryptionKey::from_pem_or_der(data);
});
