//! An image encrypted by `cocoon-ctl image encrypt`, through real tools: the layout is one
//! real `skopeo` wrote (`skopeo copy oci:.. oci:..`), `skopeo inspect` reads the encrypted
//! one, `skopeo copy` pushes it to a real Debian `docker-registry` on 127.0.0.1, and the
//! guest's registry client (`cocoon_image_pull::registry::OciRegistry`) pulls it and
//! `unpack_layer` decrypts it with the KEK as the KBS resource. Skips (prints SKIPPED)
//! without the tools; under CI=true that is a failure.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::path::Path;
use std::process::Command;

use cocoon_image_pull::registry::{OciRegistry, RegistriesConf, Registry, RegistryOptions};
use cocoon_image_pull::LayerDescriptor;
use common::*;
use futures_util::StreamExt;
use serde_json::Value;

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn oci(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_image_through_skopeo_and_a_registry() {
    if !registry::tools(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine");
    let img = make_layout(&mine, "v1", false);
    // The layout we encrypt is one skopeo wrote.
    let layout = dir.path().join("skopeo-layout");
    skopeo(&["copy", &oci(&mine, "v1"), &oci(&layout, "v1")]);
    let (kek_path, kek) = keygen(dir.path(), "kek");
    ctl_ok(&[
        "image",
        "encrypt",
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        &oci(&layout, "v1"),
    ]);
    let (md, m) = manifest_for(&layout, "v1");

    // skopeo reads our encrypted layout (1.9.3's inspect lists layer digests only).
    let inspected: Value =
        serde_json::from_slice(&skopeo(&["inspect", &oci(&layout, "v1")])).unwrap();
    assert_eq!(inspected["Digest"], md.as_str());
    let layers = m["layers"].as_array().unwrap();
    let digests: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
    assert_eq!(
        inspected["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        digests
    );
    let raw = skopeo(&["inspect", "--raw", &oci(&layout, "v1")]);
    assert_eq!(sha256(&raw), md);

    // Push it as it is.
    let reg = registry::start_registry(None);
    let dest = format!("{}/test/encrypted:v1", reg.addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        &oci(&layout, "v1"),
        &format!("docker://{dest}"),
    ]);

    // The guest's registry client pulls it; the guest's pipeline decrypts it.
    let client = OciRegistry::new(RegistryOptions {
        registries: RegistriesConf::parse(&format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            reg.addr
        ))
        .unwrap(),
        ..Default::default()
    })
    .unwrap();
    let resolved = client.resolve(&dest).await.unwrap();
    assert_eq!(resolved.manifest_digest, md);
    let config: Value =
        serde_json::from_slice(&client.fetch_config(&resolved).await.unwrap()).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!(img.tars.iter().map(|t| sha256(t)).collect::<Vec<_>>())
    );
    let keys = keys(KID, &kek);
    for (i, l) in resolved.manifest.layers.iter().enumerate() {
        let desc = LayerDescriptor {
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: l.size as u64,
            annotations: l
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        assert!(desc.media_type.ends_with("+encrypted"));
        let mut stream = client.open_blob(&resolved, l).await.unwrap();
        let mut blob = Vec::new();
        while let Some(chunk) = stream.stream.next().await {
            blob.extend_from_slice(&chunk.unwrap());
        }
        let id = config["rootfs"]["diff_ids"][i].as_str().unwrap().to_owned();
        let target = dir.path().join(format!("rootfs-{i}"));
        let (d, b, k, t) = (desc.clone(), blob.clone(), keys.clone(), target.clone());
        tokio::task::spawn_blocking(move || unpack(&d, &id, &b, &k, &t))
            .await
            .unwrap()
            .unwrap();
        check_files(&target, i, &img.big[i]);
        // Without the KEK: nothing.
        let id = config["rootfs"]["diff_ids"][i].as_str().unwrap().to_owned();
        let wrong = keys_for_other();
        let t2 = dir.path().join(format!("nokey-{i}"));
        let r = tokio::task::spawn_blocking(move || unpack(&desc, &id, &blob, &wrong, &t2))
            .await
            .unwrap();
        assert!(r.is_err());
    }
}

fn keys_for_other() -> cocoon_image_pull::StaticKeys {
    keys(KID, &random(32))
}
