//! The floor for the agent's start-up: the same kernel, QEMU command and console
//! watcher, with an initrd whose `/init` is a busybox script that prints one line and
//! powers off. Its `Run /init` → line time is what any `/init` pays under this
//! emulator (exec from the initramfs, the first page faults, a console write); the
//! agent's `Run /init` → `listening on` is compared with it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{procs, vm};

/// The line the floor's `/init` prints.
pub const FLOOR_LINE: &str = "cocoon-floor: /init ran";

/// Boots the floor guest once; returns `Run /init` → [`FLOOR_LINE`].
pub fn measure(
    work: &Path,
    rootfs_builder: &Path,
    busybox: &Path,
    base: &vm::VmConfig,
) -> Result<Duration> {
    let dir = work.join("floor");
    std::fs::create_dir_all(&dir)?;
    let init = dir.join("init");
    std::fs::write(
        &init,
        format!("#!/bin/busybox sh\necho '{FLOOR_LINE}'\nexec /bin/busybox poweroff -f\n"),
    )?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let initrd = dir.join("initrd.img");
    procs::run(
        std::process::Command::new(rootfs_builder)
            .arg("initrd")
            .arg("--agent")
            .arg(&init)
            .arg("--busybox")
            .arg(busybox)
            .arg("--no-pause-bundle")
            .arg("-o")
            .arg(&initrd),
    )
    .context("building the floor initrd")?;
    let cfg = vm::VmConfig {
        kernel: base.kernel.clone(),
        initrd,
        cmdline: "console=ttyS0 panic=1".into(),
        memory: base.memory.clone(),
        registry_port: base.registry_port,
        kbs_port: base.kbs_port,
        hotplug: base.hotplug,
        volume: None,
    };
    let mut guest = vm::Vm::boot(&dir, &cfg)?;
    let line = guest
        .wait_console(FLOOR_LINE, Duration::from_secs(150))
        .context("the floor guest")?;
    let run_init = guest
        .console
        .seen("Run /init")
        .context("the floor guest's console has no `Run /init`")?;
    guest
        .wait_poweroff(Duration::from_secs(30))
        .context("the floor guest did not power off")?;
    Ok(line.saturating_sub(run_init))
}
