//! How a test skips, and the one input that may be absent: genpolicy's upstream files.
//! One copy, included with `#[path]` by `tests/common/mod.rs` (the integration tests) and
//! the policy unit tests.

use std::path::{Path, PathBuf};

/// Whether a skip must fail instead: under `CI=true` or `COCOON_REQUIRE_ALL=1` every test
/// has to run, so a machine that lacks root or a tool is an error, not a pass.
pub fn skips_fail() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("COCOON_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The one way a test skips: prints `SKIPPED: <reason>` and returns (the caller then
/// returns), or panics with the reason when [`skips_fail`].
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    if skips_fail() {
        panic!("cannot skip under CI=true or COCOON_REQUIRE_ALL=1: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// `../shared/fixtures/genpolicy` (Kata's `rules.rego`, its settings and upstream's test
/// cases: upstream code, read in place and never copied into the project), or `None`
/// through [`skip_or_fail`] when no `../shared` is beside the project.
#[track_caller]
pub fn genpolicy_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/genpolicy");
    if dir.join("rules.rego").is_file() {
        return Some(dir);
    }
    skip_or_fail(&format!(
        "genpolicy's rules are read from {} (upstream code, not copied): no ../shared here",
        dir.display()
    ));
    None
}
