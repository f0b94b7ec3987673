//! initdata: made by `cocoon-ctl initdata pack`'s code, read by the agent; the digest
//! checked against SEV-SNP `HOST_DATA` and TDX `MRCONFIGID` through attester test doubles
//! (match, mismatch, withheld); and on the running agent: the initdata policy in force,
//! the KBS from `aa.toml` getting the TOML as `init-data`, a bad initdata stopping it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod kbs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cocoon_agent::config::AgentConfig;
use cocoon_agent::initdata::{self, Bound, Initdata, InitdataError};
use cocoon_attester::snp::device::{SnpExtReportReq, SnpGuestDevice, SnpIoctlError, SnpReportResp};
use cocoon_attester::snp::{SnpAttester, SnpTransport};
use cocoon_attester::tdx::device::{TdxGuestDevice, TdxReportReq};
use cocoon_attester::tdx::TdxAttester;
use cocoon_attester::Attester;
use cocoon_ctl::initdata as pack;
use serde_json::Value;

use common::{call, AgentProcess, AGENT};
use kbs::TestKbs;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attester/tests/fixtures");

/// The sev-guest driver with a recorded report whose `HOST_DATA` (0xC0..0xE0) the test sets.
struct FakeSevGuest {
    report: Vec<u8>,
}

impl FakeSevGuest {
    fn with_host_data(host_data: &[u8]) -> Attester {
        let mut report = std::fs::read(Path::new(FIXTURES).join("snp/trustee-test-report.bin"))
            .expect("attester fixture");
        report[0xC0..0xE0].copy_from_slice(host_data);
        Attester::snp(SnpAttester::new(SnpTransport::Device(Box::new(
            FakeSevGuest { report },
        ))))
    }
}

impl SnpGuestDevice for FakeSevGuest {
    fn get_ext_report(
        &self,
        req: &mut SnpExtReportReq,
        _certs: &mut [u8],
        resp: &mut SnpReportResp,
    ) -> Result<(), SnpIoctlError> {
        let mut report = self.report.clone();
        report[0x50..0x90].copy_from_slice(&req.data.user_data);
        resp.data[..4].copy_from_slice(&0u32.to_le_bytes());
        resp.data[4..8].copy_from_slice(&(report.len() as u32).to_le_bytes());
        resp.data[0x20..0x20 + report.len()].copy_from_slice(&report);
        Ok(())
    }
}

/// The tdx-guest driver with a recorded TDREPORT whose MRCONFIGID (TDINFO + 64) is set.
struct FakeTdxGuest {
    report: Vec<u8>,
}

impl FakeTdxGuest {
    fn with_mrconfigid(mrconfigid: &[u8]) -> (Attester, tempfile::TempDir) {
        let mut report = std::fs::read(Path::new(FIXTURES).join("tdx/gc-tdx_report_1.bin"))
            .expect("attester fixture");
        report[512 + 64..512 + 112].copy_from_slice(mrconfigid);
        let dir = tempfile::tempdir().unwrap();
        let tdx = TdxAttester::new(
            None,
            Some(Box::new(FakeTdxGuest { report })),
            dir.path().join("CCEL"),
            dir.path().join("measurements"),
        );
        (Attester::tdx(tdx), dir)
    }
}

impl TdxGuestDevice for FakeTdxGuest {
    fn get_report0(&self, req: &mut TdxReportReq) -> Result<(), nix::errno::Errno> {
        req.tdreport.copy_from_slice(&self.report);
        req.tdreport[128..192].copy_from_slice(&req.reportdata);
        Ok(())
    }
}

fn entries(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Packed on the "host" with cocoon-ctl's code, read back by the agent's.
fn packed(algorithm: pack::Algorithm, items: &[(&str, &str)]) -> (Initdata, String) {
    let toml = pack::document(algorithm, &entries(items)).unwrap();
    let d = Initdata::from_image("test image", &pack::image(&toml)).unwrap();
    assert_eq!(d.toml, toml);
    (d, toml)
}

const POLICY: &str = "package agent_policy\n\ndefault ExecProcessRequest := false\n";

#[test]
fn host_and_guest_agree_on_the_digest_and_the_registers() {
    for algorithm in [
        pack::Algorithm::Sha256,
        pack::Algorithm::Sha384,
        pack::Algorithm::Sha512,
    ] {
        let (d, toml) = packed(algorithm, &[("policy.rego", POLICY)]);
        let s = pack::summary(&toml).unwrap();
        assert_eq!(s["digest"].as_str().unwrap(), d.digest_hex());
        assert_eq!(d.policy(), Some(POLICY));

        let host_data = hex::decode(s["snp_host_data"].as_str().unwrap()).unwrap();
        let snp = FakeSevGuest::with_host_data(&host_data);
        assert_eq!(
            d.check(Some(&snp)).unwrap(),
            Bound::Verified {
                register: "HOST_DATA"
            }
        );
        let mrconfigid = hex::decode(s["tdx_mrconfigid"].as_str().unwrap()).unwrap();
        let (tdx, _dir) = FakeTdxGuest::with_mrconfigid(&mrconfigid);
        assert_eq!(
            d.check(Some(&tdx)).unwrap(),
            Bound::Verified {
                register: "MRCONFIGID"
            }
        );
    }
}

#[test]
fn a_mismatch_refuses_and_says_why() {
    let (d, _) = packed(pack::Algorithm::Sha384, &[("policy.rego", POLICY)]);
    // The host launched the VM with other initdata (one byte differs).
    let mut other = d.digest[..32].to_vec();
    other[31] ^= 1;
    let snp = FakeSevGuest::with_host_data(&other);
    let err = d.check(Some(&snp)).unwrap_err();
    assert!(matches!(err, InitdataError::Mismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("refusing to start"), "{text}");
    assert!(text.contains("HOST_DATA"), "{text}");
    assert!(text.contains(&hex::encode(&d.digest[..32])), "{text}");
    assert!(text.contains(&hex::encode(&other)), "{text}");

    let (tdx, _dir) = FakeTdxGuest::with_mrconfigid(&[0u8; 48]);
    let text = d.check(Some(&tdx)).unwrap_err().to_string();
    assert!(text.contains("MRCONFIGID"), "{text}");
    assert!(text.contains(&"00".repeat(48)), "{text}");
}

#[test]
fn withheld_initdata_is_refused_when_the_hardware_binds_some() {
    let snp = FakeSevGuest::with_host_data(&[7u8; 32]);
    let err = initdata::check_absent(&snp).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no initdata was found") && text.contains("HOST_DATA"),
        "{text}"
    );
    assert!(text.contains(&"07".repeat(32)), "{text}");
    // Launched without initdata: an all-zero register.
    initdata::check_absent(&FakeSevGuest::with_host_data(&[0u8; 32])).unwrap();
    let (tdx, _dir) = FakeTdxGuest::with_mrconfigid(&[0u8; 48]);
    initdata::check_absent(&tdx).unwrap();
}

#[test]
fn sample_and_no_tee_are_unverified() {
    let (d, _) = packed(pack::Algorithm::Sha256, &[("policy.rego", POLICY)]);
    assert!(matches!(d.check(None).unwrap(), Bound::Unverified { .. }));
    let Bound::Unverified { why } = d.check(Some(&Attester::sample())).unwrap() else {
        panic!("sample has no register");
    };
    assert!(why.contains("sample"), "{why}");
}

#[test]
fn upstream_example_configs_apply() {
    // guest-components' example aa.toml / cdh.toml shapes (values shortened).
    let aa = "[token_configs]\n\n[token_configs.coco_as]\nurl = \"http://127.0.0.1:8000\"\n\n\
              [token_configs.kbs]\nurl = \"https://127.0.0.1:8080\"\ntee_key_algorithm = \"ECDH-ES+A256KW-P256\"\n\
              cert = '''\n-----BEGIN CERTIFICATE-----\nMIID\n-----END CERTIFICATE-----\n'''\n\n\
              [eventlog_config]\n\ninit_pcr = 17\nenable_eventlog = false\n\n[log]\nlevel = \"info\"\n";
    let cdh = "socket = \"unix:///run/confidential-containers/cdh.sock\"\n\n[aa]\n\
               aa_socket = \"unix:///run/confidential-containers/attestation-agent/attestation-agent.sock\"\n\n\
               [kbc]\nname = \"cc_kbc\"\nurl = \"https://127.0.0.1:8080\"\n\n\
               [[credentials]]\npath = \"/run/confidential-containers/cdh/kbs/test/file\"\nresource_uri = \"kbs:///default/test/file\"\n\n\
               [image]\nmax_concurrent_layer_downloads_per_image = 2\n\
               authenticated_registry_credentials_uri = \"kbs:///default/credential/test\"\n\
               extra_root_certificates = []\nwork_dir = \"/run/image-rs\"\n\n\
               [[image.registry_config.registry]]\nprefix = \"example.com/banned\"\nblocked = true\n\n\
               [image.image_pull_proxy]\nhttps_proxy = \"http://127.0.0.1:5432\"\nno_proxy = \"192.168.0.1,localhost\"\n\n\
               [log]\nlevel = \"info\"\n";
    let (d, _) = packed(
        pack::Algorithm::Sha384,
        &[("aa.toml", aa), ("cdh.toml", cdh), ("policy.rego", POLICY)],
    );
    let mut config = AgentConfig::default();
    let notes = d.apply(&mut config).unwrap();
    assert_eq!(
        config.aa_kbc_params.as_ref().unwrap().url,
        "https://127.0.0.1:8080"
    );
    assert!(config.kbs_cert.as_deref().unwrap().contains("MIID"));
    assert_eq!(config.image.max_concurrent_layer_downloads_per_image, 2);
    assert_eq!(
        config
            .image
            .image_pull_proxy
            .as_ref()
            .unwrap()
            .https_proxy
            .as_deref(),
        Some("http://127.0.0.1:5432")
    );
    assert!(config.image.registry_config.is_some());
    assert!(notes.iter().any(|n| n.contains("credentials")), "{notes:?}");
}

fn write_image(dir: &Path, items: &[(&str, &str)]) -> (PathBuf, String) {
    let toml = pack::document(pack::Algorithm::Sha384, &entries(items)).unwrap();
    let path = dir.join("initdata.img");
    std::fs::write(&path, pack::image(&toml)).unwrap();
    (path, toml)
}

fn agent_command(dir: &Path, config: &str) -> (Command, String) {
    let file = dir.join("agent.toml");
    std::fs::write(&file, config).unwrap();
    let sock = dir.join("agent.sock");
    let addr = format!("unix://{}", sock.display());
    let mut command = Command::new(AGENT);
    command
        .arg("--config")
        .arg(&file)
        .env("KATA_AGENT_SERVER_ADDR", &addr)
        .env("COCOON_RUN_DIR", dir.join("run"))
        .env_remove("KATA_AGENT_POLICY_FILE")
        .env_remove("COCOON_POLICY_CONFIDENTIAL");
    (command, addr)
}

#[test]
fn the_running_agent_uses_initdata_policy_and_kbs() {
    let kbs = TestKbs::start(&[("default/secret/x", b"resource-x")], None, &[]);
    let dir = tempfile::tempdir().unwrap();
    let policy = "package agent_policy\n\n\
                  default GuestDetailsRequest := true\n\
                  default ExecProcessRequest := false\n\
                  ExecProcessRequest if {\n    print(\"exec is off in this pod\")\n    false\n}\n";
    let aa = format!("[token_configs.kbs]\nurl = \"{}\"\n", kbs.url);
    let (image, toml) = write_image(dir.path(), &[("aa.toml", &aa), ("policy.rego", policy)]);
    // The agent's own config names another KBS and policy file: initdata wins.
    let config = format!(
        "attester = \"sample\"\naa_kbc_params = \"cc_kbc::http://127.0.0.1:9\"\n\
         policy_file = \"/nonexistent.rego\"\n\
         guest_components_rest_api = \"all\"\nguest_components_rest_api_addr = \"127.0.0.1:0\"\n\
         initdata = \"{}\"\n",
        image.display()
    );
    let (command, addr) = agent_command(dir.path(), &config);
    let mut agent = AgentProcess::start(command);
    let log = agent.seen.join("\n");
    assert!(log.contains("initdata is NOT bound to hardware"), "{log}");
    assert!(log.contains("initdata policy.rego"), "{log}");

    let details = call(&addr, "GetGuestDetails", "{}").unwrap();
    let features = details["agent_details"]["extra_features"].to_string();
    assert!(features.contains("initdata=unverified"), "{details}");
    assert!(features.contains("tee=sample"), "{details}");
    let e = call(
        &addr,
        "ExecProcess",
        r#"{"container_id":"c","exec_id":"e","process":{"Args":["sh"]}}"#,
    )
    .unwrap_err();
    assert!(e.contains("PERMISSION_DENIED"), "{e}");
    assert!(e.contains("ExecProcessRequest is blocked by policy"), "{e}");

    // The KBS aa.toml names gets the initdata TOML as init-data in attest.
    let needle = "workload REST API listening";
    let line = match agent.seen.iter().find(|l| l.contains(needle)) {
        Some(l) => l.clone(),
        None => agent.wait_for_line(needle, Duration::from_secs(10)),
    };
    let v: Value = serde_json::from_str(&line).unwrap();
    let rest = v["fields"]["addr"]
        .as_str()
        .or(v["addr"].as_str())
        .unwrap()
        .to_string();
    let body = ureq::get(&format!("http://{rest}/cdh/resource/default/secret/x"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert_eq!(body, "resource-x");
    let last: Value = serde_json::from_str(
        &ureq::get(&format!("{}/test/last-attest", kbs.url))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["init-data"]["format"], "toml", "{last}");
    assert_eq!(last["init-data"]["body"].as_str(), Some(toml.as_str()));
}

#[test]
fn bad_initdata_stops_the_agent_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = write_image(dir.path(), &[("policy.rego", POLICY)]);
    let bytes = std::fs::read(&good).unwrap();
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut magic = bytes.clone();
    magic[..8].copy_from_slice(b"INITDATA");
    cases.push(("magic", magic, "bad magic"));
    cases.push(("truncated", bytes[..16 + len / 2].to_vec(), "is truncated"));
    let mut oversized = bytes.clone();
    oversized[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    cases.push(("oversized", oversized, "is oversized"));
    let mut gz = bytes.clone();
    gz[16..18].copy_from_slice(b"PK");
    cases.push(("gzip", gz, "not valid gzip"));
    for (name, data, needle) in cases {
        let path = dir.path().join(format!("{name}.img"));
        std::fs::write(&path, data).unwrap();
        let config = format!("initdata = \"{}\"\n", path.display());
        let (mut command, _) = agent_command(dir.path(), &config);
        let out = command.output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{name}: {all}");
        assert!(!all.contains("listening on"), "{name}: {all}");
        assert!(!all.contains("serving requests"), "{name}: {all}");
        assert!(all.contains(needle), "{name}: {all}");
        assert!(all.contains(&format!("{name}.img")), "{name}: {all}");
        // Said once, on the console line.
        let console = String::from_utf8_lossy(&out.stderr);
        assert_eq!(console.matches(needle).count(), 1, "{name}: {console}");
    }
}

#[test]
fn startup_with_a_tee_whose_register_cannot_be_read() {
    use cocoon_attester::{AttesterChoice, Paths, Probe};
    let root = tempfile::tempdir().unwrap();
    let paths = Paths::under(root.path());
    // A probe that finds SEV-SNP, whose /dev/sev-guest is a regular file (ioctl ENOTTY).
    std::fs::create_dir_all(paths.sev_guest_dev.parent().unwrap()).unwrap();
    std::fs::write(&paths.sev_guest_dev, b"").unwrap();
    std::fs::create_dir_all(&paths.sev_guest_platform).unwrap();
    let probe = Probe::run(AttesterChoice::Auto, "default", paths);
    assert!(probe.tee().is_some());
    let dev = root.path().join("dev");

    // With initdata: it cannot be checked, so the agent must not start.
    let (image, _) = write_image(root.path(), &[("policy.rego", POLICY)]);
    let err = initdata::startup(Some(&image), Some(&dev), &probe).unwrap_err();
    assert!(matches!(err, InitdataError::Binding { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cannot read the hardware binding"),
        "{err}"
    );

    // Choosing the sample attester does not turn the check off on such a guest.
    let sample = Probe::run(
        AttesterChoice::Sample,
        "agent.attester",
        Paths::under(root.path()),
    );
    assert_eq!(sample.tee(), Some(cocoon_attester::Tee::Sample));
    let err = initdata::startup(Some(&image), Some(&dev), &sample).unwrap_err();
    assert!(matches!(err, InitdataError::Binding { .. }), "{err:?}");

    // Without: nothing to check; start-up goes on (attestation reports the device).
    assert!(initdata::startup(None, Some(&dev), &probe)
        .unwrap()
        .is_none());
    assert!(initdata::startup(None, Some(&dev), &sample)
        .unwrap()
        .is_none());
    // No TEE at all: initdata unverified.
    let none = Probe::run(
        AttesterChoice::Auto,
        "default",
        Paths::under(&root.path().join("empty")),
    );
    let found = initdata::startup(Some(&image), Some(&dev), &none)
        .unwrap()
        .unwrap();
    assert!(matches!(found.bound, Bound::Unverified { .. }));
    assert_eq!(initdata::feature(Some(&found)), "initdata=unverified");
}

/// A block device node for the loop device `dev` at `at`.
fn node(dev: &common::LoopDevice, at: &Path) {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(&dev.0).unwrap().rdev();
    nix::sys::stat::mknod(
        at,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        rdev,
    )
    .unwrap();
}

#[test]
fn the_initdata_block_device_is_found_by_its_magic() {
    if !nix::unistd::geteuid().is_root() {
        return common::skip_or_fail("needs root for loop devices");
    }
    let dir = tempfile::tempdir().unwrap();
    let (image, toml) = write_image(dir.path(), &[("policy.rego", POLICY)]);
    let other = dir.path().join("other.img");
    std::fs::write(&other, vec![0u8; 4096]).unwrap();
    let (Some(initdata_dev), Some(other_dev)) = (
        common::LoopDevice::attach(&image),
        common::LoopDevice::attach(&other),
    ) else {
        return;
    };
    let dev = dir.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    node(&other_dev, &dev.join("vda")); // a disk without the magic
    node(&initdata_dev, &dev.join("vdb"));
    node(&initdata_dev, &dev.join("loop9")); // not a name the scan looks at
    std::fs::copy(&image, dev.join("sda")).unwrap(); // the magic, but not a block device
    assert_eq!(initdata::find_device(&dev).unwrap(), Some(dev.join("vdb")));
    let none = cocoon_attester::Probe::run(
        cocoon_attester::AttesterChoice::Auto,
        "default",
        cocoon_attester::Paths::under(&dir.path().join("no-tee")),
    );
    let found = initdata::startup(None, Some(&dev), &none).unwrap().unwrap();
    assert_eq!(found.initdata.toml, toml);
    assert_eq!(found.initdata.origin, dev.join("vdb").display().to_string());
    // Not asked to scan: nothing.
    assert!(initdata::startup(None, None, &none).unwrap().is_none());
}
