//! The built-in pause bundle: an OCI bundle whose process only sleeps, used as the
//! sandbox container when the image builder gives no `--pause-bundle`.
//!
//! The `pause` binary is a 129-byte static x86-64 ELF made here, byte by byte, so the
//! bundle needs no toolchain and is identical on every host. Layout: ELF header
//! (<https://refspecs.linuxfoundation.org/elf/gabi4+/ch4.eheader.html>), one `PT_LOAD`
//! program header, then the code `loop: mov eax, 34 (SYS_pause); syscall; jmp loop`.

/// Guest path of the bundle (upstream Kata's).
pub const BUNDLE_PATH: &str = "/pause_bundle";

const BASE: u64 = 0x40_0000;
const EHDR_LEN: u16 = 64;
const PHDR_LEN: u16 = 56;
/// `mov eax, 34; syscall; jmp -9`.
const CODE: [u8; 9] = [0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7];

/// The `pause` executable.
pub fn pause_elf() -> Vec<u8> {
    let code_off = u64::from(EHDR_LEN + PHDR_LEN);
    let total = code_off + CODE.len() as u64;
    let mut b = Vec::with_capacity(total as usize);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_SYSV, padding.
    b.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    b.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: EM_X86_64
    b.extend_from_slice(&1u32.to_le_bytes()); // e_version
    b.extend_from_slice(&(BASE + code_off).to_le_bytes()); // e_entry
    b.extend_from_slice(&u64::from(EHDR_LEN).to_le_bytes()); // e_phoff
    b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    b.extend_from_slice(&EHDR_LEN.to_le_bytes()); // e_ehsize
    b.extend_from_slice(&PHDR_LEN.to_le_bytes()); // e_phentsize
    b.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    b.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                  // Program header: PT_LOAD, PF_R|PF_X, the whole file at BASE.
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&5u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    b.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    b.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    b.extend_from_slice(&total.to_le_bytes()); // p_filesz
    b.extend_from_slice(&total.to_le_bytes()); // p_memsz
    b.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    b.extend_from_slice(&CODE);
    b
}

/// The bundle's `config.json` (OCI runtime spec 1.0): run `/pause` read-only, in its own
/// PID, IPC, UTS and mount namespaces. The runtime overrides namespaces per sandbox.
pub fn config_json() -> String {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/pause"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "pause",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ]
        }
    });
    let mut s = serde_json::to_string_pretty(&spec).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn elf_layout() {
        let elf = pause_elf();
        assert_eq!(elf.len(), 129);
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, BASE + 120);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pause_runs_until_killed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pause");
        std::fs::write(&p, pause_elf()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&p).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "pause exited early");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn config_is_json() {
        let v: serde_json::Value = serde_json::from_str(&config_json()).unwrap();
        assert_eq!(v["process"]["args"][0], "/pause");
    }
}
