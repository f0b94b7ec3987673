//! Links the static musl build of the agent against libseccomp built for musl
//! (`scripts/libseccomp-musl.sh`, run by `scripts/setup.sh`): youki's libcontainer
//! enforces OCI seccomp profiles through libseccomp, and Debian ships it only for
//! glibc. The native (glibc) build links Debian's `libseccomp-dev`.
//!
//! The static-pie musl binary is also linked with packed relative relocations (DT_RELR,
//! `-z pack-relative-relocs`; musl's start-up code applies them since 1.2.4): its 34k
//! relative relocations take 9 KiB instead of 820 KiB, and the start-up code reads 9 KiB.
//! It stays position-independent, so the agent keeps ASLR.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=COCOON_LIBSECCOMP_MUSL");
    println!("cargo:rerun-if-env-changed=COCOON_BUILD_DIR");
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("musl") {
        return;
    }
    let dir = match std::env::var_os("COCOON_LIBSECCOMP_MUSL") {
        Some(d) => PathBuf::from(d),
        None => {
            let build = std::env::var_os("COCOON_BUILD_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
                    PathBuf::from(manifest).join("..").join("build")
                });
            build.join("libseccomp-musl").join("lib")
        }
    };
    let lib = dir.join("libseccomp.a");
    println!("cargo:rerun-if-changed={}", lib.display());
    if !lib.is_file() {
        panic!(
            "the musl build of cocoon-agent needs libseccomp built for musl at {}: \
             run `bash scripts/libseccomp-musl.sh` (scripts/setup.sh does), or point \
             COCOON_LIBSECCOMP_MUSL at a directory holding libseccomp.a",
            lib.display()
        );
    }
    println!("cargo:rustc-link-arg-bin=cocoon-agent=-Wl,-z,pack-relative-relocs");
    // Searched before the system's directories, so Debian's glibc libseccomp.a is
    // never picked up by the static link.
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=seccomp");
}
