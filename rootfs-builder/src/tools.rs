//! Running the host tools the rootfs path needs (`mkfs.ext4`, `debugfs`, `mkfs.erofs`,
//! `veritysetup`), with errors that say which package to install.

use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{0}` is not installed (Debian: {1}); run tests/qemu/setup.sh")]
    Missing(String, &'static str),
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The Debian package that provides `tool`.
pub fn package_of(tool: &str) -> &'static str {
    match tool {
        "veritysetup" => "cryptsetup-bin",
        "mkfs.erofs" | "fsck.erofs" => "erofs-utils",
        "mkfs.ext4" | "debugfs" | "e2fsck" => "e2fsprogs",
        _ => "?",
    }
}

/// Runs `cmd`, returning its stdout; a non-zero exit is an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<String, ToolError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let shown = format!(
        "{program} {}",
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ToolError::Missing(program.clone(), package_of(&program))
        } else {
            ToolError::Io(PathBuf::from(&program), e)
        }
    })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            cmd: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `Command` for `name`, looked up in `PATH` and then in `/usr/sbin` and `/sbin`
/// (where Debian puts `mkfs.*`, `debugfs` and `veritysetup`, outside a user's `PATH`).
pub fn command(name: &str) -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    Command::new(found.unwrap_or_else(|| PathBuf::from(name)))
}
