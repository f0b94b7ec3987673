//! Registry client against real Debian `docker-registry` instances on 127.0.0.1, images
//! pushed with real `skopeo`. Skips (prints SKIPPED) without the tools, fails under CI=true.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use cocoon_image_pull::registry::{
    AuthConfig, OciRegistry, RegistriesConf, Registry, RegistryError, RegistryOptions,
};
use common::registry::{digest_of, free_port, insecure_conf_text, skip, start_registry};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    digest_of(b)
}

/// A tiny OCI layout: per platform one gzip layer, a config, a manifest; index.json lists
/// them all (with platforms when more than one).
struct Layout {
    dir: tempfile::TempDir,
    /// (arch, manifest digest, layer digest, layer bytes)
    images: Vec<(String, String, String, Vec<u8>)>,
}

fn blob(dir: &Path, b: &[u8]) -> String {
    let d = sha(b);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::write(p, b).unwrap();
    d
}

fn layout(arches: &[&str]) -> Layout {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut images = Vec::new();
    let mut entries = Vec::new();
    for arch in arches {
        let mut tb = tar::Builder::new(Vec::new());
        let data = format!("hello from {arch}\n").repeat(5000);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tb.append_data(&mut h, "hello.txt", data.as_bytes())
            .unwrap();
        let tarb = tb.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tarb).unwrap();
        let layer = gz.finish().unwrap();
        let ld = blob(dir.path(), &layer);
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(&tarb)]}
        })
        .to_string();
        let cd = blob(dir.path(), config.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": layer.len()}]
        })
        .to_string();
        let md = blob(dir.path(), manifest.as_bytes());
        let mut e = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(),
        });
        if arches.len() > 1 {
            e["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        } else {
            e["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
        }
        entries.push(e);
        images.push((arch.to_string(), md, ld, layer));
    }
    if arches.len() > 1 {
        // A nested index, so that `skopeo copy --all` pushes it as a multi-arch image.
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        })
        .to_string();
        let id = blob(dir.path(), index.as_bytes());
        entries = vec![serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": id, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}
        })];
    }
    let top = serde_json::json!({"schemaVersion": 2, "manifests": entries}).to_string();
    std::fs::write(dir.path().join("index.json"), top).unwrap();
    Layout { dir, images }
}

fn push(dir: &Path, dest: &str, creds: Option<&str>) {
    common::registry::push(dir, "v1", dest, creds, &[]);
}

fn insecure_conf(addrs: &[&str]) -> RegistriesConf {
    RegistriesConf::parse(&insecure_conf_text(addrs)).unwrap()
}

fn tools() -> bool {
    common::registry::tools(&[])
}

async fn stream_digest(
    reg: &OciRegistry,
    img: &cocoon_image_pull::registry::ResolvedImage,
) -> String {
    let desc = &img.manifest.layers[0];
    let mut s = reg.open_blob(img, desc).await.unwrap();
    let mut h = Sha256::new();
    while let Some(chunk) = s.stream.next().await {
        h.update(chunk.unwrap());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_pull_tag_digest_multiarch_insecure_blocked_mirror() {
    if !tools() {
        return;
    }
    let r = start_registry(None);
    let single = layout(&["amd64"]);
    push(
        single.dir.path(),
        &format!("{}/test/single:v1", r.addr),
        None,
    );
    let multi = layout(&["arm64", "amd64"]);
    push(multi.dir.path(), &format!("{}/test/multi:v1", r.addr), None);

    let reg = OciRegistry::new(RegistryOptions {
        registries: insecure_conf(&[&r.addr]),
        ..Default::default()
    })
    .unwrap();

    // Tag.
    let img = reg
        .resolve(&format!("{}/test/single:v1", r.addr))
        .await
        .unwrap();
    let (_, md, ld, layer) = &single.images[0];
    assert_eq!(&img.manifest_digest, md);
    assert_eq!(&img.manifest.layers[0].digest, ld);
    let cfg = reg.fetch_config(&img).await.unwrap();
    assert!(String::from_utf8_lossy(&cfg).contains("\"amd64\""));
    assert_eq!(stream_digest(&reg, &img).await, sha(layer));

    // Digest.
    let img2 = reg
        .resolve(&format!("{}/test/single@{md}", r.addr))
        .await
        .unwrap();
    assert_eq!(&img2.manifest_digest, md);
    // A digest that is not there: not found, naming the image and registry.
    let bogus = format!("sha256:{}", "0".repeat(64));
    let e = reg
        .resolve(&format!("{}/test/single@{bogus}", r.addr))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains(&r.addr), "{e}");
    let e = reg
        .resolve(&format!("{}/test/nope:v1", r.addr))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");

    // Multi-arch index → amd64.
    let img = reg
        .resolve(&format!("{}/test/multi:v1", r.addr))
        .await
        .unwrap();
    let amd = multi.images.iter().find(|i| i.0 == "amd64").unwrap();
    assert_eq!(img.manifest_digest, amd.1);
    assert!(img.index_digest.is_some());
    assert_eq!(stream_digest(&reg, &img).await, sha(&amd.3));

    // Insecure refused unless configured: HTTPS to a plain HTTP registry fails.
    let strict = OciRegistry::new(RegistryOptions::default()).unwrap();
    assert!(strict
        .resolve(&format!("{}/test/single:v1", r.addr))
        .await
        .is_err());
    let conf = RegistriesConf::parse(&format!(
        "[[registry]]\nprefix = \"x.example\"\nlocation = \"http://{}\"\n",
        r.addr
    ))
    .unwrap();
    let e = OciRegistry::new(RegistryOptions {
        registries: conf,
        ..Default::default()
    })
    .unwrap()
    .resolve("x.example/test/single:v1")
    .await
    .unwrap_err();
    assert!(matches!(e, RegistryError::InsecureRefused { .. }), "{e}");

    // Blocked prefix.
    let conf = RegistriesConf::parse(&format!(
        "[[registry]]\nprefix = \"{0}/test\"\nlocation = \"{0}/test\"\nblocked = true\n",
        r.addr
    ))
    .unwrap();
    let e = OciRegistry::new(RegistryOptions {
        registries: conf,
        ..Default::default()
    })
    .unwrap()
    .resolve(&format!("{}/test/single:v1", r.addr))
    .await
    .unwrap_err();
    assert!(matches!(e, RegistryError::Blocked { .. }), "{e}");

    // Mirror used: the location is a dead port, the mirror is the live registry; the
    // reference names a registry that does not exist (never contacted: rewritten).
    let dead = format!("127.0.0.1:{}", free_port());
    let conf = RegistriesConf::parse(&format!(
        "[[registry]]\nprefix = \"nowhere.invalid\"\nlocation = \"{dead}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
        r.addr
    ))
    .unwrap();
    let mreg = OciRegistry::new(RegistryOptions {
        registries: conf,
        ..Default::default()
    })
    .unwrap();
    let img = mreg
        .resolve("nowhere.invalid/test/single:v1")
        .await
        .unwrap();
    assert_eq!(img.source.registry(), r.addr);
    assert_eq!(&img.manifest_digest, md);
    assert_eq!(stream_digest(&mreg, &img).await, sha(layer));
}

fn htpasswd_line(user: &str, pass: &str) -> Option<String> {
    let out = Command::new("htpasswd")
        .args(["-nbB", user, pass])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned() + "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_basic_auth() {
    if !tools() {
        return;
    }
    let Some(line) = htpasswd_line("alice", "s3cret") else {
        skip("htpasswd not installed (apache2-utils)");
        return;
    };
    let r = start_registry(Some(&line));
    let single = layout(&["amd64"]);
    push(
        single.dir.path(),
        &format!("{}/test/private:v1", r.addr),
        Some("alice:s3cret"),
    );
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let auth_json = |p: &str| {
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            r.addr,
            b64(&format!("alice:{p}"))
        )
    };
    let image = format!("{}/test/private:v1", r.addr);
    let ok = OciRegistry::new(RegistryOptions {
        registries: insecure_conf(&[&r.addr]),
        auth: AuthConfig::parse(auth_json("s3cret").as_bytes()).unwrap(),
        ..Default::default()
    })
    .unwrap();
    let img = ok.resolve(&image).await.unwrap();
    assert_eq!(img.manifest_digest, single.images[0].1);
    assert_eq!(stream_digest(&ok, &img).await, sha(&single.images[0].3));

    for auth in [
        AuthConfig::parse(auth_json("wrong").as_bytes()).unwrap(),
        AuthConfig::default(),
    ] {
        let bad = OciRegistry::new(RegistryOptions {
            registries: insecure_conf(&[&r.addr]),
            auth,
            ..Default::default()
        })
        .unwrap();
        let e = bad.resolve(&image).await.unwrap_err();
        assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
        assert!(
            e.to_string().contains(&image) || e.to_string().contains("test/private"),
            "{e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_bearer_token_auth() {
    if !tools() || !common::registry::tools(&["openssl"]) {
        return;
    }
    let tokens = common::registry::TokenServer::start("alice", "t0ken-pass");
    let r = common::registry::start_registry_auth(|_| tokens.registry_auth());
    let single = layout(&["amd64"]);
    let image = format!("{}/test/token:v1", r.addr);
    push(single.dir.path(), &image, Some("alice:t0ken-pass"));
    let pushed = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(pushed > 0, "skopeo got no token");

    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let auth = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        r.addr,
        b64("alice:t0ken-pass")
    );
    let ok = OciRegistry::new(RegistryOptions {
        registries: insecure_conf(&[&r.addr]),
        auth: AuthConfig::parse(auth.as_bytes()).unwrap(),
        ..Default::default()
    })
    .unwrap();
    let img = ok.resolve(&image).await.unwrap();
    assert_eq!(img.manifest_digest, single.images[0].1);
    assert_eq!(stream_digest(&ok, &img).await, sha(&single.images[0].3));
    assert!(
        tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > pushed,
        "the pull did not go through the token server"
    );

    // Anonymous: the token server refuses, and so does the registry.
    let anon = OciRegistry::new(RegistryOptions {
        registries: insecure_conf(&[&r.addr]),
        ..Default::default()
    })
    .unwrap();
    let e = anon.resolve(&image).await.unwrap_err();
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_https_extra_root_certificate_and_proxy() {
    if !tools() {
        return;
    }
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kbs/tests/data");
    let (cert, key, ca) = (
        data.join("server.pem"),
        data.join("server.key"),
        std::fs::read(data.join("ca.pem")).unwrap(),
    );
    let r = common::registry::start_registry_auth(|_| common::registry::tls_yaml(&cert, &key));
    // skopeo trusts the test CA through --dest-cert-dir.
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("ca.crt"), &ca).unwrap();
    let single = layout(&["amd64"]);
    let image = format!("{}/test/tls:v1", r.addr);
    let out = Command::new("skopeo")
        .args(["copy", "--preserve-digests", "--dest-cert-dir"])
        .arg(certs.path())
        .arg(format!("oci:{}:v1", single.dir.path().display()))
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let proxy = common::registry::ConnectProxy::start();
    let client = |roots: Vec<Vec<u8>>, no_proxy: Option<&str>| {
        OciRegistry::new(RegistryOptions {
            https_proxy: Some(proxy.url.clone()),
            no_proxy: no_proxy.map(str::to_owned),
            extra_root_certificates: roots,
            ..Default::default()
        })
        .unwrap()
    };
    let tunnels = || proxy.tunnels.load(std::sync::atomic::Ordering::SeqCst);

    // HTTPS through the proxy, trusting the extra root.
    let reg = client(vec![ca.clone()], None);
    let img = reg.resolve(&image).await.unwrap();
    assert_eq!(img.manifest_digest, single.images[0].1);
    assert_eq!(stream_digest(&reg, &img).await, sha(&single.images[0].3));
    let through = tunnels();
    assert!(through > 0, "nothing went through the proxy");

    // no_proxy: straight to the registry.
    let reg = client(vec![ca.clone()], Some("127.0.0.1"));
    reg.resolve(&image).await.unwrap();
    assert_eq!(tunnels(), through, "no_proxy not honoured");

    // Without the extra root the registry's certificate is not trusted.
    let e = client(vec![], Some("127.0.0.1"))
        .resolve(&image)
        .await
        .unwrap_err();
    let text = format!("{e:?}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls") || text.contains("unknownissuer"),
        "{e:?}"
    );
}
