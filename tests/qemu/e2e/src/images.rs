//! The test images: Debian's busybox-static as the base layer, the app on top (a script
//! and a file only the decrypted image holds), written as an OCI layout and pushed with
//! real `skopeo` — encrypted by skopeo (`jwe:` RSA) and by `cocoon-ctl image encrypt`
//! (CoCo provider packets) — plus a tampered copy and one whose key the KBS denies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sha2::Digest as _;

use crate::procs::run;

/// The file only the decrypted image holds; the workload prints it.
pub const IMAGE_FILE_TEXT: &str = "decrypted in the guest: the payload is 4417";

/// The workload: prints the image file, its PID (1: a PID namespace of its own), digests
/// of the two secrets (never the secrets), and whether its seccomp profile is installed and denies a user namespace, fails
/// `mkdir` with the profile's errno and kills on `sync` (both in subshells: busybox may
/// run such applets inside the shell's own process).
const RUN_SH: &str = r#"#!/bin/sh
echo "image file: $(cat /app/message.txt)"
echo "pid in its own namespace: $$"
echo "env secret sha256: $(printf %s "$DB_PASSWORD" | sha256sum | cut -d' ' -f1)"
echo "volume secret sha256: $(cat /etc/secret/token | sha256sum | cut -d' ' -f1)"
echo "sealed env replaced: $(case "$DB_PASSWORD" in sealed.*) echo no;; *) echo yes;; esac)"
echo "seccomp: $(grep '^Seccomp:' /proc/self/status | tr -d '[:space:]'), userns $(unshare -U true 2>/dev/null && echo allowed || echo denied)"
echo "seccomp mkdir: $(mkdir /tmp/seccomp-test 2>&1)"
(exec /bin/sync); echo "seccomp sync: exit $?"
"#;

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn tar_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", dir)?;
    Ok(b.into_inner()?)
}

fn gzip(b: &[u8]) -> Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b)?;
    Ok(gz.finish()?)
}

/// A busybox root: the static binary, its applets as symlinks, passwd/group.
fn busybox_root(dir: &Path, busybox: &Path) -> Result<()> {
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "root", "run"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy(busybox, dir.join("bin/busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    let list = run(Command::new(busybox).arg("--list"))?;
    for applet in String::from_utf8_lossy(&list).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

/// Writes the plain image as an OCI layout (tag `v1`) in `dir`. A `variant` changes the
/// app layer (so its `diff_id` is new: layers the guest holds already are never fetched
/// again, whatever key or registry copy another image names).
pub fn plain_layout(dir: &Path, busybox: &Path, variant: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let base = tmp.path().join("base");
    busybox_root(&base, busybox)?;
    let app = tmp.path().join("app");
    std::fs::create_dir_all(app.join("app"))?;
    std::fs::write(
        app.join("app/message.txt"),
        format!("{IMAGE_FILE_TEXT}{variant}"),
    )?;
    std::fs::write(app.join("app/run.sh"), RUN_SH)?;
    std::fs::set_permissions(app.join("app/run.sh"), PermissionsExt::from_mode(0o755))?;

    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |b: &[u8]| -> Result<String> {
        let d = digest(b);
        std::fs::write(blobs.join(&d[7..]), b)?;
        Ok(d)
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for root in [&base, &app] {
        let tar = tar_dir(root)?;
        diff_ids.push(digest(&tar));
        let gz = gzip(&tar)?;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": put(&gz)?, "size": gz.len()
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["/app/run.sh"],
                   "Env": ["PATH=/bin"], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config.as_bytes())?, "size": config.len()},
        "layers": layers
    })
    .to_string();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(manifest.as_bytes())?, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}
    }]});
    std::fs::write(dir.join("index.json"), index.to_string())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// `skopeo copy oci:<layout>:v1 docker://<dest>` over plain HTTP.
pub fn push(layout: &Path, dest: &str, extra: &[&str]) -> Result<()> {
    let mut c = Command::new("skopeo");
    c.args(["copy", "--dest-tls-verify=false"]);
    if extra.is_empty() {
        c.arg("--preserve-digests");
    }
    c.args(extra)
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{dest}"));
    run(&mut c).map(drop)
}

/// The layout encrypted with CoCo provider packets under `kek` named `kid`, in `out`.
pub fn provider_encrypted(layout: &Path, out: &Path, kek: &[u8], kid: &str) -> Result<()> {
    use cocoon_ctl::image::{keywrap::Kek, layout};
    layout::encrypt_layout(&layout::EncryptOptions {
        layout: layout.to_path_buf(),
        output: Some(out.to_path_buf()),
        tags: vec![],
        layers: vec![],
        kbs: Some((Kek::from_bytes(kek).context("the KEK")?, kid.to_owned())),
        recipients: vec![],
        provider_name: "attestation-agent".to_owned(),
        allow_zstd: false,
    })
    .context("cocoon-ctl image encrypt")?;
    Ok(())
}

/// The registry's copy of the top layer of `layout_dir`'s image: flips a byte in the
/// middle of it, as a hostile registry (or host) would.
pub fn tamper_top_layer(layout_dir: &Path, registry_root: &Path) -> Result<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout_dir.join("index.json"))?)?;
    let md = index["manifests"][0]["digest"]
        .as_str()
        .context("index without a manifest")?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
        layout_dir.join("blobs/sha256").join(&md[7..]),
    )?)?;
    let layers = manifest["layers"].as_array().context("no layers")?;
    let top = layers
        .last()
        .and_then(|l| l["digest"].as_str())
        .context("no top layer")?
        .to_owned();
    let hex = &top[7..];
    let data: PathBuf = registry_root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).with_context(|| format!("{}", data.display()))?;
    let mid = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(mid) {
        *b ^= 0x55;
    }
    std::fs::write(&data, bytes)?;
    Ok(top)
}

/// An RSA key pair for `jwe:` (openssl): (public PEM path, private PEM bytes).
pub fn rsa_key(dir: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let private = dir.join("rsa.pem");
    let public = dir.join("rsa.pub.pem");
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&private)
        .arg("2048"))?;
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public))?;
    Ok((public, std::fs::read(private)?))
}
