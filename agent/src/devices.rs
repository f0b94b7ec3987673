//! Devices from CreateContainer: a block device the runtime hot-plugged (`blk` /
//! `virtio-blk`, found by `/dev` name or PCI path, awaited for `agent.hotplug_timeout`)
//! appears in the container at `container_path` with the guest's major:minor, and the
//! container's device cgroup allows it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::time::Duration;

use cocoon_protocols::agent::Device;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, Spec,
};

use crate::error::{AgentError, Result};
use crate::storage::wait_for_device;

const BLOCK_TYPES: &[&str] = &["blk", "virtio-blk", "virtio-blk-pci"];

/// Checks every device, resolves it in the guest and rewrites the spec.
pub fn apply(spec: &mut Spec, devices: &[Device], hotplug: Duration) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let mut linux = spec
        .linux()
        .clone()
        .ok_or_else(|| AgentError::invalid("OCI.Linux", "missing"))?;
    let mut list: Vec<LinuxDevice> = linux.devices().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    for (i, d) in devices.iter().enumerate() {
        if !BLOCK_TYPES.contains(&d.type_.as_str()) {
            return Err(AgentError::invalid(
                format!("devices[{i}].type"),
                format!("unsupported device type {:?}", d.type_),
            ));
        }
        if !d.container_path.starts_with('/') {
            return Err(AgentError::invalid(
                format!("devices[{i}].container_path"),
                format!("{:?} is not absolute", d.container_path),
            ));
        }
        let dev = wait_for_device(&d.vm_path, hotplug)?;
        let meta = std::fs::metadata(&dev)
            .map_err(|e| AgentError::internal(&format!("stat {}", dev.display()), e))?;
        if !meta.file_type().is_block_device() {
            return Err(AgentError::invalid(
                format!("devices[{i}].vm_path"),
                format!("{} is not a block device", dev.display()),
            ));
        }
        let (major, minor) = (
            i64::from(libc::major(meta.rdev())),
            i64::from(libc::minor(meta.rdev())),
        );
        let target = PathBuf::from(&d.container_path);
        match list.iter_mut().find(|x| x.path() == &target) {
            Some(x) => {
                x.set_major(major);
                x.set_minor(minor);
            }
            None => list.push(
                LinuxDeviceBuilder::default()
                    .path(target)
                    .typ(LinuxDeviceType::B)
                    .major(major)
                    .minor(minor)
                    .file_mode(0o660u32)
                    .build()
                    .map_err(|e| AgentError::internal("device entry", e))?,
            ),
        }
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::B)
                .major(major)
                .minor(minor)
                .access("rwm")
                .build()
                .map_err(|e| AgentError::internal("device rule", e))?,
        );
    }
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    linux.set_devices(Some(list));
    spec.set_linux(Some(linux));
    Ok(())
}
