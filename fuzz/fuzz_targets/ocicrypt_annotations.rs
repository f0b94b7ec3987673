//! ocicrypt layer annotations: the public HMAC and the key unwrapping (key-provider
//! packets and JWE recipients) against no keys and one fixed private key.
#![no_main]

use std::collections::BTreeMap;

use cocoon_image_pull::ocicrypt::{public_hmac, unwrap_layer_key};
use cocoon_image_pull::NoKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(annotations) = serde_json::from_slice::<BTreeMap<String, String>>(data) else {
        return;
    };
    let _ = public_hmac(&annotations);
    let _ = unwrap_layer_key(&annotations, &NoKeys);
});
