//! Secrets through the real agent: the test KBS (`cocoon-test-kbs`, a faithful double of
//! Trustee's RCAR 0.4.0 KBS, since Trustee cannot run here) on loopback, the sample
//! attester, sealed secrets made with `cocoon-ctl secret`'s code, busybox containers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod kbs;
mod pod;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use kbs::{public_jwk, seal, seal_payload, TestKbs};
use pod::{require_pod, Pod};

const KEY: &str = "kbs:///default/sealed-key/1";
const ENV_SECRET: &[u8] = b"env-plaintext-7f3a";
const FILE_SECRET: &[u8] = b"file-plaintext-91c2";
const TOKEN_SECRET: &[u8] = b"token-plaintext-5d08";

fn resources() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("default/sealed-key/1", public_jwk(1)),
        ("default/secret/env", ENV_SECRET.to_vec()),
        ("default/secret/file", FILE_SECRET.to_vec()),
        ("default/secret/token", TOKEN_SECRET.to_vec()),
        ("default/secret/denied", b"never released".to_vec()),
    ]
    .into_iter()
    .chain((0..20).map(|i| {
        let path: &'static str = Box::leak(format!("default/bulk/{i}").into_boxed_str());
        (path, format!("bulk-{i}").into_bytes())
    }))
    .collect()
}

fn start_kbs(args: &[&str]) -> TestKbs {
    let res = resources();
    let list: Vec<(&str, &[u8])> = res.iter().map(|(p, d)| (*p, d.as_slice())).collect();
    TestKbs::start(
        &list,
        Some(json!({"default": "allow", "deny": ["default/secret/denied"]})),
        args,
    )
}

fn config(kbs_url: &str, extra: &str) -> String {
    format!(
        "attester = \"sample\"\naa_kbc_params = \"cc_kbc::{kbs_url}\"\n\
         guest_components_rest_api = \"all\"\nguest_components_rest_api_addr = \"127.0.0.1:0\"\n{extra}"
    )
}

/// The workload REST API's address, from the agent's log.
fn rest_addr(pod: &mut Pod) -> String {
    let agent = pod.agent.as_mut().unwrap();
    let needle = "workload REST API listening";
    let line = match agent.seen.iter().find(|l| l.contains(needle)) {
        Some(l) => l.clone(),
        None => agent.wait_for_line(needle, Duration::from_secs(10)),
    };
    let v: Value = serde_json::from_str(&line).unwrap();
    v["fields"]["addr"]
        .as_str()
        .or(v["addr"].as_str())
        .unwrap_or_else(|| panic!("no addr in {line}"))
        .to_string()
}

fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn shared(pod: &Pod) -> PathBuf {
    let d = pod.run_dir.join("shared/containers");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A Kubernetes secret volume as the kubelet lays it out: `..<ts>/` with the files,
/// `..data -> ..<ts>`, and `name -> ..data/name`.
fn secret_volume(dir: &Path, files: &[(&str, &str)]) {
    let ts = dir.join("..2026_12_01_00_00_00.1");
    std::fs::create_dir_all(&ts).unwrap();
    for (name, text) in files {
        std::fs::write(ts.join(name), text).unwrap();
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
    }
    std::os::unix::fs::symlink("..2026_12_01_00_00_00.1", dir.join("..data")).unwrap();
}

fn bind(dest: &str, source: &Path) -> Value {
    json!({"destination": dest, "source": source.display().to_string(), "type": "bind",
           "options": ["rbind", "ro"]})
}

fn secrets_mounts(pod: &Pod) -> Vec<String> {
    pod.mounts()
        .into_iter()
        .filter(|l| l.contains("/secrets"))
        .collect()
}

/// CreateContainer fails with `needle` in the error and leaves nothing of the container.
fn create_fails(pod: &Pod, cid: &str, spec: Value, needle: &str) -> String {
    let err = pod
        .call(
            "CreateContainer",
            json!({"container_id": cid, "exec_id": cid, "OCI": spec}),
        )
        .unwrap_err();
    assert!(err.contains(needle), "want {needle:?} in: {err}");
    assert!(!pod.run_dir.join(cid).exists(), "{cid}: bundle left behind");
    assert!(secrets_mounts(pod).is_empty(), "{:?}", secrets_mounts(pod));
    let err2 = pod
        .call("StartContainer", json!({"container_id": cid}))
        .unwrap_err();
    assert!(err2.contains("NOT_FOUND"), "{err2}");
    err
}

#[test]
fn sealed_env_and_volumes_are_unsealed_into_a_tmpfs() {
    require_pod!();
    let kbs = start_kbs(&[]);
    let mut pod = Pod::with_config(&config(&kbs.url, ""));
    let rest = rest_addr(&mut pod);
    let shared = shared(&pod);
    let volume = shared.join("c1-secret-volume");
    std::fs::create_dir_all(&volume).unwrap();
    let sealed_file = seal("kbs:///default/secret/file", KEY, 1);
    secret_volume(
        &volume,
        &[("password", &sealed_file), ("username", "plain-user")],
    );
    let token_file = shared.join("c1-token");
    let sealed_token = seal("kbs:///default/secret/token", KEY, 1);
    std::fs::write(&token_file, format!("{sealed_token}\n")).unwrap();

    let mut spec = pod.spec(&[
        "sh",
        "-c",
        "echo env=$PASSWORD; cat /etc/secret/password; echo; cat /etc/secret/username; echo; \
         cat /etc/token; echo; stat -c '%a %u %g' /etc/secret/password /etc/token; \
         id -u; grep /etc/secret /proc/mounts | cut -d' ' -f3,4 | tr ',' ' '",
    ]);
    spec["Process"]["User"] = json!({"UID": 1000, "GID": 1000});
    spec["Process"]["Env"]
        .as_array_mut()
        .unwrap()
        .push(json!(format!(
            "PASSWORD={}",
            seal("kbs:///default/secret/env", KEY, 1)
        )));
    let mounts = spec["Mounts"].as_array_mut().unwrap();
    mounts.push(bind("/etc/secret", &volume));
    mounts.push(bind("/etc/token", &token_file));
    pod.create("c1", spec);
    // The tmpfs is there before the workload starts.
    let tmpfs = secrets_mounts(&pod);
    assert_eq!(tmpfs.len(), 1, "{tmpfs:?}");
    assert!(
        tmpfs[0].contains("tmpfs") && tmpfs[0].contains("nosuid") && tmpfs[0].contains("noexec"),
        "{tmpfs:?}"
    );
    pod.ok("StartContainer", json!({"container_id": "c1"}));
    let out = pod.read_all("c1", "c1", false);
    assert_eq!(pod.wait("c1", "c1"), 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "env=env-plaintext-7f3a", "{out}");
    assert_eq!(lines[1], "file-plaintext-91c2", "{out}");
    assert_eq!(lines[2], "plain-user", "{out}");
    assert_eq!(lines[3], "token-plaintext-5d08", "{out}");
    assert_eq!(lines[4], "400 1000 1000", "{out}");
    assert_eq!(lines[5], "400 1000 1000", "{out}");
    assert_eq!(lines[6], "1000", "{out}");
    assert!(lines[7].starts_with("tmpfs ro"), "{out}");

    // The shared directory still holds only sealed text.
    assert_eq!(
        std::fs::read_to_string(volume.join("password")).unwrap(),
        sealed_file
    );
    assert!(std::fs::read_to_string(&token_file)
        .unwrap()
        .starts_with("sealed."));
    let names: Vec<String> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("unsealed")),
        "plaintext copies next to the sealed files: {names:?}"
    );

    // One attestation for everything: the key, three secrets, then 20 more resources
    // through the workload API.
    assert_eq!(kbs.handshakes(), 1);
    for i in 0..20 {
        let (status, body) = get(&format!("http://{rest}/cdh/resource/default/bulk/{i}"));
        assert_eq!((status, body.as_str()), (200, format!("bulk-{i}").as_str()));
    }
    assert_eq!(kbs.handshakes(), 1, "20 resources after boot = 1 handshake");

    let metrics = pod.ok("GetMetrics", json!({}))["metrics"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        metrics.contains("coco_attestation_success_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("coco_kbs_resource_releases_total{resource=\"default/secret/env\"} 1"),
        "{metrics}"
    );
    // Three secrets sealed with one key: the key is fetched once for the container.
    assert!(
        metrics.contains("coco_kbs_resource_releases_total{resource=\"default/sealed-key/1\"} 1\n"),
        "{metrics}"
    );

    pod.ok("RemoveContainer", json!({"container_id": "c1"}));
    assert!(
        secrets_mounts(&pod).is_empty(),
        "{:?}",
        secrets_mounts(&pod)
    );
    assert!(!pod.run_dir.join("c1").exists());
    let log = pod.agent_log();
    for secret in [ENV_SECRET, FILE_SECRET, TOKEN_SECRET] {
        let s = std::str::from_utf8(secret).unwrap();
        assert!(!log.contains(s), "plaintext {s} in the agent's log:\n{log}");
    }
    assert!(log.contains("\"audit\""), "no audit lines:\n{log}");
}

#[test]
fn workload_api_routes_and_token_expiry() {
    require_pod!();
    let kbs = start_kbs(&["--token-ttl", "4", "--token-leeway", "0"]);
    let mut pod = Pod::with_config(&config(&kbs.url, ""));
    let rest = rest_addr(&mut pod);
    let (s, body) = get(&format!("http://{rest}/cdh/resource/default/secret/file"));
    assert_eq!((s, body.as_bytes()), (200, FILE_SECRET));
    let (s, body) = get(&format!("http://{rest}/cdh/resource/default/none/x"));
    // Trustee reports a missing resource as `401 PluginInternalError` (so does the double):
    // a bad gateway that says a missing resource looks like this.
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("missing resource"), "{body}");
    assert_eq!(
        get(&format!("http://{rest}/cdh/resource/default/secret/denied")).0,
        403
    );
    let (s, ev) = get(&format!("http://{rest}/aa/evidence?runtime_data=hello"));
    assert_eq!(s, 200, "{ev}");
    let ev: Value = serde_json::from_str(&ev).unwrap();
    assert!(ev["report_data"].is_string(), "{ev}");
    let (s, body) = get(&format!("http://{rest}/aa/token?token_type=kbs"));
    assert_eq!(s, 403, "{body}");
    let (s, info) = get(&format!("http://{rest}/info"));
    assert_eq!(s, 200);
    assert!(info.contains("sample"), "{info}");
    assert_eq!(kbs.handshakes(), 1);
    // The token lives 4 s; renewed once it is within its margin (half its life here).
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..5 {
        assert_eq!(
            get(&format!("http://{rest}/cdh/resource/default/secret/env")).0,
            200
        );
    }
    assert_eq!(
        kbs.handshakes(),
        2,
        "token expiry = exactly one new handshake"
    );
}

#[test]
fn rest_api_modes_are_honoured() {
    require_pod!();
    let kbs = start_kbs(&[]);
    let mut pod = Pod::with_config(&config(&kbs.url, "").replace(
        "guest_components_rest_api = \"all\"",
        "guest_components_rest_api = \"attestation\"",
    ));
    let rest = rest_addr(&mut pod);
    let (s, body) = get(&format!("http://{rest}/cdh/resource/default/secret/file"));
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("agent.guest_components_rest_api"), "{body}");
    assert_eq!(
        get(&format!("http://{rest}/aa/evidence?runtime_data=x")).0,
        200
    );
}

/// Each failure is its own clear error, names the secret, never its value, and leaves no
/// container.
#[test]
fn unsealing_failures_fail_create_and_leave_nothing() {
    require_pod!();
    let kbs = start_kbs(&[]);
    let pod = Pod::with_config(&config(&kbs.url, "kbs_deadline = 2\n"));
    let with_env = |value: String| {
        let mut spec = pod.spec(&["true"]);
        spec["Process"]["Env"]
            .as_array_mut()
            .unwrap()
            .push(json!(format!("DB_PASSWORD={value}")));
        spec
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad-signature",
            seal("kbs:///default/secret/env", KEY, 2),
            "signature does not verify",
        ),
        (
            "unknown-kid",
            seal(
                "kbs:///default/secret/env",
                "kbs:///default/sealed-key/none",
                1,
            ),
            "sealed-key/none",
        ),
        (
            "not-found",
            seal("kbs:///default/secret/missing", KEY, 1),
            "default/secret/missing",
        ),
        (
            "denied",
            seal("kbs:///default/secret/denied", KEY, 1),
            "denied",
        ),
        (
            "version",
            seal_payload(
                &json!({"version": "0.2.0", "type": "vault", "name": "kbs:///default/secret/env",
                        "provider": "kbs", "provider_settings": {}, "annotations": {}}),
                KEY,
                1,
            ),
            "0.2.0",
        ),
        (
            "envelope",
            seal_payload(
                &json!({"version": "0.1.0", "type": "envelope", "provider": "aliyun",
                        "key_id": "k", "encrypted_key": "", "encrypted_data": "", "wrap_type": "A256GCM",
                        "iv": "", "provider_settings": {}, "annotations": {}}),
                KEY,
                1,
            ),
            "not supported",
        ),
        ("garbage", "sealed.%%%.x.y".to_string(), "DB_PASSWORD"),
    ];
    for (cid, value, needle) in cases {
        let err = create_fails(&pod, cid, with_env(value), needle);
        assert!(err.contains("env DB_PASSWORD"), "{cid}: {err}");
    }

    // A spec running `args` with `sealed` as a file secret volume at /etc/x.
    let with_file = |name: &str, sealed: String, args: &[&str]| {
        let f = shared(&pod).join(name);
        std::fs::write(&f, sealed).unwrap();
        let mut spec = pod.spec(args);
        spec["Mounts"]
            .as_array_mut()
            .unwrap()
            .push(bind("/etc/x", &f));
        spec
    };
    // A file secret that cannot be unsealed names the file.
    let spec = with_file(
        "bad-file",
        seal("kbs:///default/secret/denied", KEY, 1),
        &["true"],
    );
    let err = create_fails(&pod, "file", spec, "bad-file");
    assert!(err.contains("denied"), "{err}");
    // A failure after the tmpfs was mounted (libcontainer refuses the program) unmounts it.
    let sealed = seal("kbs:///default/secret/file", KEY, 1);
    let spec = with_file("good-file", sealed, &["/bin/no-such-program"]);
    create_fails(&pod, "late", spec, "no-such-program");

    // KBS faults: 500, tampered JWE, slow past the deadline.
    let fresh = || seal("kbs:///default/secret/env", KEY, 1);
    kbs.fault("500", 0);
    create_fails(&pod, "f500", with_env(fresh()), "500");
    kbs.fault("tamper", 0);
    create_fails(&pod, "tamper", with_env(fresh()), "decrypt");
    kbs.fault("slow", 5000);
    let t = std::time::Instant::now();
    create_fails(&pod, "slow", with_env(fresh()), "deadline");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    kbs.fault("none", 0);
    // ...and recovers.
    pod.create("ok", with_env(fresh()));
    pod.ok("RemoveContainer", json!({"container_id": "ok"}));
    let metrics = pod.ok("GetMetrics", json!({}))["metrics"]
        .as_str()
        .unwrap()
        .to_string();
    for line in [
        "coco_kbs_resource_denials_total{resource=\"default/secret/denied\",reason=\"denied\"} 2",
        // The verification key is fetched first, so the KBS faults hit it.
        "coco_kbs_resource_denials_total{resource=\"default/sealed-key/1\",reason=\"deadline\"} 1",
        "coco_kbs_resource_denials_total{resource=\"default/sealed-key/1\",reason=\"http_5xx\"} 1",
        "coco_kbs_resource_denials_total{resource=\"default/sealed-key/1\",reason=\"decrypt\"} 1",
        "coco_kbs_resource_releases_total{resource=\"default/secret/file\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
    let log = pod.agent_log();
    assert!(!log.contains("env-plaintext"), "{log}");
}

#[test]
fn no_kbs_means_no_secrets() {
    require_pod!();
    // A KBS that is down: a closed port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pod = Pod::with_config(&config(
        &format!("http://127.0.0.1:{port}"),
        "kbs_deadline = 1\n",
    ));
    let mut spec = pod.spec(&["true"]);
    spec["Process"]["Env"]
        .as_array_mut()
        .unwrap()
        .push(json!(format!(
            "S={}",
            seal("kbs:///default/secret/env", KEY, 1)
        )));
    let err = create_fails(&pod, "down", spec.clone(), "env S");
    assert!(err.contains("cannot connect to the KBS"), "{err}");
    assert!(err.contains("deadline"), "{err}");
    // A container without secrets still runs.
    pod.run("plain", &["true"]);
    assert_eq!(pod.wait("plain", "plain"), 0);
    drop(pod);

    // No KBS configured at all.
    let pod = Pod::with_config("attester = \"sample\"\n");
    let err = create_fails(&pod, "nokbs", spec, "agent.aa_kbc_params");
    assert!(err.contains("env S"), "{err}");
}

#[test]
fn https_kbs_with_the_configured_ca() {
    require_pod!();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kbs/tests/data");
    let (cert, key) = (data.join("server.pem"), data.join("server.key"));
    let kbs = start_kbs(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(kbs.url.starts_with("https://"), "{}", kbs.url);
    let with_secret = |pod: &Pod| {
        let mut spec = pod.spec(&["sh", "-c", "echo $S"]);
        spec["Process"]["Env"]
            .as_array_mut()
            .unwrap()
            .push(json!(format!(
                "S={}",
                seal("kbs:///default/secret/env", KEY, 1)
            )));
        spec
    };
    // Without the CA the KBS's certificate is refused.
    let pod = Pod::with_config(&config(&kbs.url, "kbs_deadline = 2\n"));
    let err = create_fails(&pod, "noca", with_secret(&pod), "env S");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    drop(pod);
    // With it, the secret arrives over TLS.
    let pod = Pod::with_config(&config(
        &kbs.url,
        &format!("kbs_cert_file = \"{}\"\n", data.join("ca.pem").display()),
    ));
    pod.create("tls", with_secret(&pod));
    pod.ok("StartContainer", json!({"container_id": "tls"}));
    assert_eq!(pod.read_all("tls", "tls", false), "env-plaintext-7f3a\n");
}
