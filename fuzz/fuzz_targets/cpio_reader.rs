//! The newc cpio reader; what it reads back is written again and must read the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootfs_builder::cpio::{read_archive, NewcWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = read_archive(data) else {
        return;
    };
    let mut w = NewcWriter::new(Vec::<u8>::new());
    for e in &entries {
        if w.append(e).is_err() {
            return;
        }
    }
    let Ok(out) = w.finish() else {
        return;
    };
    let again = read_archive(&out).expect("a written archive reads back");
    assert_eq!(entries.len(), again.len());
});
