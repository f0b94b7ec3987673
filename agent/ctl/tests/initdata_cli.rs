#![allow(clippy::unwrap_used)]
//! `cocoon-ctl initdata` through the binary: pack → the annotation value, the device
//! image and the TOML; inspect of each form; what is refused. The value is decoded here
//! as the Kata runtime does (base64 std → gzip → TOML) and the digest recomputed.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use base64::Engine;
use sha2::Digest;

fn ctl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cocoon-ctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> serde_json::Value {
    let out = ctl(args, None);
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails(args: &[&str], needle: &str) {
    let out = ctl(args, None);
    assert!(!out.status.success(), "{args:?}: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn pack_then_inspect_every_form() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(
        p("aa.toml"),
        "[token_configs.kbs]\nurl = \"http://10.0.2.2:8080\"\n",
    )
    .unwrap();
    std::fs::write(
        p("cdh.toml"),
        "[kbc]\nname = \"cc_kbc\"\nurl = \"http://10.0.2.2:8080\"\n",
    )
    .unwrap();
    std::fs::write(
        p("p.rego"),
        "package agent_policy\n\ndefault ExecProcessRequest := false\n",
    )
    .unwrap();
    let packed = ok(&[
        "initdata",
        "pack",
        "--aa",
        &p("aa.toml"),
        "--cdh",
        &p("cdh.toml"),
        "--policy",
        &p("p.rego"),
        "--algorithm",
        "sha256",
        "--toml-out",
        &p("i.toml"),
        "--image-out",
        &p("i.img"),
    ]);
    assert_eq!(
        packed["annotation"],
        "io.katacontainers.config.hypervisor.cc_init_data"
    );
    assert_eq!(packed["algorithm"], "sha256");

    // The runtime's decoding of the annotation value.
    let gz = base64::engine::general_purpose::STANDARD
        .decode(packed["value"].as_str().unwrap())
        .unwrap();
    let mut toml = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut toml)
        .unwrap();
    assert_eq!(toml, std::fs::read_to_string(p("i.toml")).unwrap());
    let digest = hex::encode(sha2::Sha256::digest(toml.as_bytes()));
    assert_eq!(packed["digest"], digest.as_str());
    assert_eq!(packed["snp_host_data"], digest.as_str());
    assert_eq!(
        packed["tdx_mrconfigid"].as_str().unwrap(),
        format!("{digest}{}", "00".repeat(16))
    );
    let image = std::fs::read(p("i.img")).unwrap();
    assert_eq!(&image[..8], b"initdata");
    assert_eq!(image.len() % 512, 0);

    let value = packed["value"].as_str().unwrap();
    for input in [
        value.to_string(),
        format!("@{}", p("i.img")),
        format!("@{}", p("i.toml")),
    ] {
        let s = ok(&["initdata", "inspect", &input]);
        assert_eq!(s["digest"], digest.as_str(), "{input}");
        assert_eq!(
            s["data"]["policy.rego"],
            std::fs::read_to_string(p("p.rego")).unwrap()
        );
        assert_eq!(s["data_keys"].as_array().unwrap().len(), 3);
    }
    let out = ctl(&["initdata", "inspect", "--toml", "-"], Some(value));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), toml);
}

#[test]
fn refusals_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(p("bad.toml"), "[token_configs.kbs\n").unwrap();
    fails(&["initdata", "pack"], "nothing to pack");
    fails(
        &["initdata", "pack", "--aa", &p("missing.toml")],
        "missing.toml",
    );
    fails(
        &["initdata", "pack", "--cdh", &p("bad.toml")],
        "bad.toml is not valid TOML",
    );
    fails(
        &["initdata", "pack", "--data", "novalue"],
        "expected KEY=PATH",
    );
    fails(
        &[
            "initdata",
            "pack",
            "--aa",
            &p("bad.toml"),
            "--algorithm",
            "md5",
        ],
        "md5",
    );
    fails(&["initdata", "inspect", "H4sIAAAA"], "not valid gzip");
    fails(
        &[
            "initdata",
            "inspect",
            "version = \"0.2.0\"\nalgorithm = \"sha256\"\n",
        ],
        "version \"0.2.0\"",
    );
}
