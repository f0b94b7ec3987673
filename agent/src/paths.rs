//! Where the agent keeps a pod's files, and the ids that name them.
//!
//! Paths follow upstream Kata: bundles under `/run/kata-containers/<cid>/`, files copied
//! by the runtime under `/run/kata-containers/shared/containers/`, sandbox storage under
//! `/run/kata-containers/sandbox/`. `COCOON_RUN_DIR` moves the whole tree (tests run the
//! agent as a plain process on a host), and `COCOON_CGROUP_PARENT` the cgroup subtree.

use std::path::{Path, PathBuf};

use crate::error::{AgentError, Result};

/// Environment variable that moves `/run/kata-containers` (tests only).
pub const ENV_RUN_DIR: &str = "COCOON_RUN_DIR";
/// Environment variable naming the cgroup subtree for containers (tests only).
pub const ENV_CGROUP_PARENT: &str = "COCOON_CGROUP_PARENT";
/// Environment variable that moves the baked-in pause bundle (tests only).
pub const ENV_PAUSE_BUNDLE: &str = "COCOON_PAUSE_BUNDLE";

const DEFAULT_RUN_DIR: &str = cocoon_protocols::wire::KATA_RUN_DIR;
const DEFAULT_CGROUP_PARENT: &str = "kata_agent";

/// Where the agent keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/run/kata-containers`: one bundle directory per container.
    pub run_dir: PathBuf,
    /// The cgroup directory containers are created under (relative to the hierarchy).
    pub cgroup_parent: String,
    /// `COCOON_CGROUP_PARENT` was given: always use it (tests keep to their subtree).
    pub cgroup_parent_forced: bool,
    /// True when the agent is PID 1 of the guest (DNS goes to /etc/resolv.conf then).
    pub is_init: bool,
    /// The pause container's bundle baked into the guest image.
    pub pause_bundle: PathBuf,
}

impl Paths {
    /// From the environment (tests) or upstream's defaults.
    pub fn from_env(is_init: bool) -> Paths {
        let run_dir = std::env::var_os(ENV_RUN_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
        let forced = std::env::var(ENV_CGROUP_PARENT)
            .ok()
            .filter(|p| !p.is_empty());
        Paths {
            run_dir,
            cgroup_parent_forced: forced.is_some(),
            cgroup_parent: forced
                .unwrap_or_else(|| DEFAULT_CGROUP_PARENT.to_string())
                .trim_matches('/')
                .to_string(),
            is_init,
            pause_bundle: std::env::var_os(ENV_PAUSE_BUNDLE)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(cocoon_protocols::wire::PAUSE_BUNDLE_DIR)),
        }
    }

    /// The cgroup of container `cid`: the spec's `cgroupsPath` when it is a plain
    /// absolute path without `..` (the runtime's cgroupfs layout), else
    /// `/<cgroup parent>/<cid>` (also for systemd-style `slice:prefix:name` paths, as
    /// the guest has no systemd).
    pub fn cgroup_path(&self, cid: &str, spec_path: Option<&Path>) -> String {
        let usable = spec_path.and_then(|p| p.to_str()).filter(|p| {
            !self.cgroup_parent_forced
                && p.starts_with('/')
                && p.len() > 1
                && !p.contains(':')
                && !p.split('/').any(|c| c == ".." || c == ".")
        });
        match usable {
            Some(p) => p.trim_end_matches('/').to_string(),
            None => format!("/{}/{cid}", self.cgroup_parent),
        }
    }

    /// `/run/kata-containers/shared/containers`: CopyFile's only destination.
    pub fn shared_dir(&self) -> PathBuf {
        self.run_dir.join("shared").join("containers")
    }

    /// `/run/kata-containers/sandbox`: the pod's own storage.
    pub fn sandbox_dir(&self) -> PathBuf {
        self.run_dir.join("sandbox")
    }

    /// `/run/kata-containers/sandbox/ephemeral` (`wire::EPHEMERAL_DIR`): the pod's
    /// emptyDir tmpfs volumes, which UpdateEphemeralMounts may remount.
    pub fn ephemeral_dir(&self) -> PathBuf {
        self.sandbox_dir().join("ephemeral")
    }

    /// libcontainer's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.run_dir.join(".state")
    }

    /// Console sockets (short paths: a unix socket path has 108 bytes at most).
    pub fn console_dir(&self) -> PathBuf {
        self.run_dir.join(".console")
    }

    pub fn bundle(&self, cid: &str) -> PathBuf {
        self.run_dir.join(cid)
    }
}

/// Container ids become directory names: keep them to a safe alphabet.
pub fn check_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(AgentError::invalid(
            field,
            format!("{id:?}: expected 1-128 characters of [A-Za-z0-9_.-], not starting with '.'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths() {
        let mut p = Paths {
            run_dir: PathBuf::from("/run/kata-containers"),
            cgroup_parent: "kata_agent".into(),
            cgroup_parent_forced: false,
            is_init: true,
            pause_bundle: PathBuf::from("/pause_bundle"),
        };
        let path = |p: &Paths, s: Option<&str>| p.cgroup_path("c1", s.map(Path::new));
        assert_eq!(path(&p, None), "/kata_agent/c1");
        assert_eq!(path(&p, Some("/kubepods/pod1/c1")), "/kubepods/pod1/c1");
        assert_eq!(path(&p, Some("kubepods.slice:cri:c1")), "/kata_agent/c1");
        assert_eq!(path(&p, Some("/a/../../etc")), "/kata_agent/c1");
        assert_eq!(path(&p, Some("relative")), "/kata_agent/c1");
        p.cgroup_parent_forced = true;
        assert_eq!(path(&p, Some("/kubepods/pod1/c1")), "/kata_agent/c1");
    }
}
