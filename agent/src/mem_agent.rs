//! MemAgentMemcgSet / MemAgentCompactSet. Upstream runs a "mem-agent" (kata-containers
//! `src/libs/mem-agent`) that, when enabled, ages and evicts memory cgroups through
//! MGLRU and compacts memory in loops paced by PSI; these RPCs retune its loops (and
//! fail with INTERNAL "mem-agent is disabled" when it is not running, its default).
//! Cocoon runs no such loops. What has a kernel knob is applied; everything else is
//! accepted, ignored, and named in the log:
//! - compaction `disabled` → `vm.compaction_proactiveness` (the kernel's own background
//!   compaction): `true` writes 0, `false` the kernel's default 20;
//! - every other field (periods, PSI limits, eviction/aging counts, swap, swappiness
//!   bound, compaction order/threshold/force times, time cap) only paces upstream's
//!   loops: no kernel knob means the same.

use std::path::Path;

use cocoon_protocols::agent::{MemAgentCompactConfig, MemAgentMemcgConfig};

use crate::error::{AgentError, Result};

/// The kernel's proactive compaction knob (linux `Documentation/admin-guide/sysctl/vm.rst`).
pub const COMPACTION_PROACTIVENESS: &str = "/proc/sys/vm/compaction_proactiveness";
/// Its default (`sysctl_compaction_proactiveness` in `mm/compaction.c`).
const PROACTIVENESS_DEFAULT: u32 = 20;

/// The fields of `MemAgentMemcgConfig` that were set: all ignored.
fn memcg_fields(c: &MemAgentMemcgConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut note = |set: bool, name| {
        if set {
            v.push(name);
        }
    };
    note(c.disabled.is_some(), "disabled");
    note(c.swap.is_some(), "swap");
    note(c.swappiness_max.is_some(), "swappiness_max");
    note(c.period_secs.is_some(), "period_secs");
    note(
        c.period_psi_percent_limit.is_some(),
        "period_psi_percent_limit",
    );
    note(
        c.eviction_psi_percent_limit.is_some(),
        "eviction_psi_percent_limit",
    );
    note(
        c.eviction_run_aging_count_min.is_some(),
        "eviction_run_aging_count_min",
    );
    v
}

/// The fields of `MemAgentCompactConfig` with no kernel knob that were set.
fn compact_ignored(c: &MemAgentCompactConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut note = |set: bool, name| {
        if set {
            v.push(name);
        }
    };
    note(c.period_secs.is_some(), "period_secs");
    note(
        c.period_psi_percent_limit.is_some(),
        "period_psi_percent_limit",
    );
    note(
        c.compact_psi_percent_limit.is_some(),
        "compact_psi_percent_limit",
    );
    note(c.compact_sec_max.is_some(), "compact_sec_max");
    note(c.compact_order.is_some(), "compact_order");
    note(c.compact_threshold.is_some(), "compact_threshold");
    note(c.compact_force_times.is_some(), "compact_force_times");
    v
}

/// MemAgentMemcgSet: nothing has a kernel knob; accepted and logged.
pub fn memcg_set(c: &MemAgentMemcgConfig) {
    let ignored = memcg_fields(c);
    tracing::info!(
        ignored = ignored.join(","),
        "MemAgentMemcgSet: Cocoon runs no memcg aging/eviction loop; these settings have no kernel knob and are ignored"
    );
}

/// MemAgentCompactSet: `disabled` is applied to `knob`
/// ([`COMPACTION_PROACTIVENESS`]); the rest is logged as ignored. Answers what was
/// written, if anything.
pub fn compact_set(c: &MemAgentCompactConfig, knob: &Path) -> Result<Option<u32>> {
    let ignored = compact_ignored(c);
    if !ignored.is_empty() {
        tracing::info!(
            ignored = ignored.join(","),
            "MemAgentCompactSet: these settings pace upstream's compaction loop, have no kernel knob, and are ignored"
        );
    }
    let Some(disabled) = c.disabled else {
        return Ok(None);
    };
    let value = if disabled { 0 } else { PROACTIVENESS_DEFAULT };
    if !knob.exists() {
        return Err(AgentError::FailedPrecondition(format!(
            "{} is missing: the kernel has no proactive compaction (CONFIG_COMPACTION)",
            knob.display()
        )));
    }
    std::fs::write(knob, format!("{value}\n"))
        .map_err(|e| AgentError::internal(&format!("writing {}", knob.display()), e))?;
    tracing::info!(
        disabled,
        value,
        "MemAgentCompactSet: vm.compaction_proactiveness set"
    );
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_disabled_is_the_proactiveness_knob() {
        let dir = tempfile::tempdir().unwrap();
        let knob = dir.path().join("compaction_proactiveness");
        std::fs::write(&knob, "20\n").unwrap();
        let mut c = MemAgentCompactConfig::new();
        assert_eq!(compact_set(&c, &knob).unwrap(), None);
        c.disabled = Some(true);
        c.compact_order = Some(9);
        assert_eq!(compact_ignored(&c), ["compact_order"]);
        assert_eq!(compact_set(&c, &knob).unwrap(), Some(0));
        assert_eq!(std::fs::read_to_string(&knob).unwrap(), "0\n");
        c.disabled = Some(false);
        assert_eq!(compact_set(&c, &knob).unwrap(), Some(20));
        assert_eq!(std::fs::read_to_string(&knob).unwrap(), "20\n");
        let e = compact_set(&c, &dir.path().join("none")).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::FAILED_PRECONDITION);
        let mut m = MemAgentMemcgConfig::new();
        assert!(memcg_fields(&m).is_empty());
        m.swap = Some(true);
        m.period_secs = Some(60);
        assert_eq!(memcg_fields(&m), ["swap", "period_secs"]);
    }
}
