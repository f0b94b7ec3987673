//! The sealed-secret parser (`sealed.<header>.<payload>.<signature>`).
#![no_main]

use cocoon_guest_components::sealed::{is_sealed, SealedSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_sealed(text);
    if let Ok(s) = SealedSecret::parse(text) {
        let _ = (s.kid(), s.version(), s.secret_type());
    }
});
