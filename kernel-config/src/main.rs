//! `kernel-config`: the guest kernel's configuration, as fragments and a checker.
//!
//! Owns the config fragments in `fragments/` (base, confidential, debug) and a `check`
//! command that reads a kernel `.config` and reports what is missing or wrong against the
//! chosen fragments, distinguishing built-in (`y`) from module (`m`).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("kernel-config: not built yet")
}
