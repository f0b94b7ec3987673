#![allow(clippy::unwrap_used)]
//! Reference values: SEV-SNP launch measurements against published test vectors, the
//! JSON document and RVPS message, and `verify`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use common::*;
use rootfs_builder::snp::{launch_measurement, SnpInput};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn input(ovmf: &str, kernel: bool, cmdline: Option<&str>, vcpus: u32, features: &str) -> SnpInput {
    SnpInput {
        ovmf: data(ovmf),
        kernel: kernel.then(|| "/dev/null".into()),
        initrd: kernel.then(|| "/dev/null".into()),
        cmdline: cmdline.map(str::to_string),
        vcpus,
        vcpu_type: "EPYC-v4".into(),
        guest_features: features.into(),
        vmm: "qemu".into(),
    }
}

/// Vectors published with the `sev` crate (tests/measurement.rs, same OVMF fixtures);
/// `sev-snp-measure` 0.0.13 gives the same values for the same inputs.
#[test]
fn snp_published_vectors() {
    let cases = [
        (
            input("ovmf_AmdSev_suffix.bin", true, Some("console=ttyS0 loglevel=7"), 1, "0x1"),
            "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa",
        ),
        (
            input("ovmf_AmdSev_suffix.bin", true, Some("console=ttyS0 loglevel=7"), 1, "0x21"),
            "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977",
        ),
        (
            input("ovmf_AmdSev_suffix.bin", true, None, 4, "0x1"),
            "5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5",
        ),
        (
            input("ovmf_AmdSev_suffix.bin", true, None, 4, "0x21"),
            "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942",
        ),
        (
            input("ovmf_OvmfX64_suffix.bin", false, None, 1, "0x1"),
            "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005",
        ),
    ];
    for (i, (inp, want)) in cases.iter().enumerate() {
        assert_eq!(launch_measurement(inp).unwrap(), *want, "vector {i}");
    }
}

/// Computed with `sev-snp-measure --mode snp --vcpus 2 --vcpu-type EPYC-Milan
/// --guest-features 0x21 --ovmf ovmf_AmdSev_suffix.bin --kernel /dev/null --initrd
/// /dev/null --append "console=ttyS0 agent.log=debug"` (version 0.0.13).
#[test]
fn snp_matches_sev_snp_measure() {
    let mut inp = input(
        "ovmf_AmdSev_suffix.bin",
        true,
        Some("console=ttyS0 agent.log=debug"),
        2,
        "0x21",
    );
    inp.vcpu_type = "EPYC-Milan".into();
    assert_eq!(
        launch_measurement(&inp).unwrap(),
        "0bde068b0311d37b8274ffc569fe35c02ad9b1a579ba415567d1fea1224a8eb9f07cfd0877eea420edf83b41397c784c"
    );
}

#[test]
fn ovmf_without_kernel_hashes_is_an_error() {
    let inp = input("ovmf_OvmfX64_suffix.bin", true, None, 1, "0x1");
    assert!(launch_measurement(&inp).is_err());
}

#[test]
fn document_rvps_message_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("initrd.img");
    std::fs::write(&art, b"initrd bytes").unwrap();
    let ovmf = data("ovmf_AmdSev_suffix.bin");
    let doc_path = dir.path().join("rv.json");
    let out = run_ok(&[
        "reference-values",
        art.to_str().unwrap(),
        "--ovmf",
        ovmf.to_str().unwrap(),
        "--kernel",
        "/dev/null",
        "--initrd",
        "/dev/null",
        "--cmdline",
        "console=ttyS0 loglevel=7",
        "--no-tdx",
        "-o",
        doc_path.to_str().unwrap(),
    ]);
    let doc = json(&out);
    let rv = &doc["reference_values"];
    assert_eq!(rv["initrd.img.sha256"][0], hex_sha256(b"initrd bytes"));
    assert_eq!(
        rv["snp_launch_measurement"][0],
        "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa"
    );
    assert_eq!(rv["kernel_cmdline"][0], "console=ttyS0 loglevel=7");
    // The RVPS message carries the same map.
    assert_eq!(doc["rvps_message"]["type"], "sample");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(doc["rvps_message"]["payload"].as_str().unwrap())
        .unwrap();
    let map: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(&map, rv);

    let verify = || {
        Command::new(bin())
            .args(["verify", "--reference-values"])
            .arg(&doc_path)
            .output()
            .unwrap()
    };
    assert!(verify().status.success());
    std::fs::write(&art, b"initrd bytez").unwrap();
    let v = verify();
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains("initrd.img.sha256"));
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// TDX values for the Debian kernel: computable, stable, and sensitive to the cmdline.
#[test]
fn tdx_rtmrs_from_debian_kernel() {
    let (mods, _) = debian_kernel();
    let boot = mods.join("../../../boot");
    let kernel = std::fs::read_dir(&boot)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .unwrap();
    let k = kernel.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, b"initrd").unwrap();
    let i = initrd.to_str().unwrap();
    let a = json(&run_ok(&[
        "reference-values",
        "--kernel",
        k,
        "--initrd",
        i,
        "--cmdline",
        "a",
    ]));
    let b = json(&run_ok(&[
        "reference-values",
        "--kernel",
        k,
        "--initrd",
        i,
        "--cmdline",
        "a",
    ]));
    let c = json(&run_ok(&[
        "reference-values",
        "--kernel",
        k,
        "--initrd",
        i,
        "--cmdline",
        "b",
    ]));
    assert_eq!(a["tdx"], b["tdx"]);
    assert_eq!(a["tdx"]["rtmr_1"], c["tdx"]["rtmr_1"]);
    assert_ne!(a["tdx"]["rtmr_2"], c["tdx"]["rtmr_2"]);
    assert_eq!(a["tdx"]["measured_cmdline"], "initrd=initrd a");
    assert_eq!(a["tdx"]["rtmr_1"].as_str().unwrap().len(), 96);
}
