//! GetDiagnosticData: a container's Kubernetes termination message (`log_type`
//! `termination_log`), as upstream's `do_read_termination_log` reads it: the annotation
//! `io.kubernetes.container.terminationMessagePath` names the container-side path; the
//! mount with that destination names the guest file; at most 4 KiB of it is answered
//! (lossy UTF-8), nothing if it does not exist yet.
//!
//! Unlike upstream, the file must lie below the pod's shared directory (where the
//! runtime puts the termination-log file it mounts): the mount source comes from the
//! untrusted host, and the agent must not read other guest files back to it.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::error::{AgentError, Result};

/// The log type upstream answers.
pub const TERMINATION_LOG: &str = "termination_log";
/// The CRI annotation naming the container's termination message path.
pub const TERMINATION_PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
/// Kubernetes caps termination messages at 4 KiB (upstream's `MAX_TERMINATION_MSG`).
pub const MAX_TERMINATION_MSG: u64 = 4096;

/// The termination message of the container whose spec (its bundle's config.json) is
/// `spec`; the file must be below `shared_dir`.
pub fn termination_log(spec: &Spec, shared_dir: &Path) -> Result<String> {
    let dest = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(TERMINATION_PATH_ANNOTATION))
        .ok_or_else(|| {
            AgentError::FailedPrecondition(format!(
                "the container has no {TERMINATION_PATH_ANNOTATION} annotation"
            ))
        })?;
    let source = spec
        .mounts()
        .as_ref()
        .and_then(|m| {
            m.iter()
                .find(|m| m.destination() == Path::new(dest))
                .and_then(|m| m.source().clone())
        })
        .ok_or_else(|| {
            AgentError::FailedPrecondition(format!("no mount of the termination log {dest}"))
        })?;
    let resolved = match std::fs::canonicalize(&source) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(AgentError::internal("the termination log", e)),
    };
    let root = std::fs::canonicalize(shared_dir).unwrap_or_else(|_| shared_dir.to_path_buf());
    if !resolved.starts_with(&root) || !resolved.is_file() {
        return Err(AgentError::PermissionDenied(format!(
            "the termination log {} is not a file below {}",
            source.display(),
            shared_dir.display()
        )));
    }
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(&resolved)
        .and_then(|f| f.take(MAX_TERMINATION_MSG).read_to_end(&mut buf))
        .map_err(|e| AgentError::internal("reading the termination log", e))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(source: &Path, annotated: bool) -> Spec {
        let mut v = json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "mounts": [{"destination": "/dev/termination-log", "source": source, "type": "bind"}]});
        if annotated {
            v["annotations"] = json!({TERMINATION_PATH_ANNOTATION: "/dev/termination-log"});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reads_the_mounted_file_capped() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        let log = shared.join("c1-abc-termination-log");
        // Missing: empty, as upstream.
        assert_eq!(termination_log(&spec(&log, true), &shared).unwrap(), "");
        std::fs::write(&log, "bye\n").unwrap();
        assert_eq!(
            termination_log(&spec(&log, true), &shared).unwrap(),
            "bye\n"
        );
        std::fs::write(&log, vec![b'x'; 10_000]).unwrap();
        assert_eq!(
            termination_log(&spec(&log, true), &shared).unwrap().len(),
            4096
        );
        let e = termination_log(&spec(&log, false), &shared).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::FAILED_PRECONDITION);
        // Outside the shared directory (directly or through a link): refused.
        let outside = dir.path().join("secret");
        std::fs::write(&outside, "key").unwrap();
        let e = termination_log(&spec(&outside, true), &shared).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::PERMISSION_DENIED, "{e}");
        std::os::unix::fs::symlink(&outside, shared.join("link")).unwrap();
        let e = termination_log(&spec(&shared.join("link"), true), &shared).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::PERMISSION_DENIED, "{e}");
    }
}
