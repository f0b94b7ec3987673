//! Interoperability with upstream CoCo, which cannot run here (no Go toolchain, no network;
//! Debian's skopeo 1.9.3 refuses `--encryption-key provider:..` with "Provided protocol not
//! recognized"). Checked against confidential-containers/guest-components at
//! 8246e5e0977f6322f0a1b0f77e0739cf1c3e1f74 and containers/ocicrypt at
//! c3436fd4d7012e0e57aa1f61a04203530f7a0753.
//!
//! 1. Upstream → us: a layer as `skopeo copy --encryption-key
//!    provider:attestation-agent:keyid=kbs:///default/key/key_id1::keypath=<kek>` with
//!    upstream's coco_keyprovider writes it. The vector was made once with Python's
//!    `cryptography` (not our code), following upstream byte for byte:
//!    - `attestation-agent/coco_keyprovider/src/enc_mods/mod.rs` `enc_optsdata_gen_anno`:
//!      `AnnotationPacket {kid, wrapped_data, iv, wrap_type}` serialised by `serde_json::
//!      to_string` (that field order, no spaces), `wrapped_data`/`iv` standard base64,
//!      12-byte random iv; `crypto.rs`: AES-256-GCM `encrypt(nonce, data)`, no AAD, tag
//!      appended; `wrap_type` `A256GCM` (its `algorithm` parameter is parsed from the
//!      `keypath` value by mistake, so it is always the default `A256GCM`).
//!    - ocicrypt `encryption.go` `preWrapKeys`: the annotation is standard base64 of the
//!      returned packet; `blockcipher/blockcipher.go`: private options
//!      `{"symkey","digest","cipheroptions":{"nonce"}}` and public options
//!      `{"cipher","hmac","cipheroptions":{}}` in Go's struct order, `[]byte` as standard
//!      base64, `digest` = the blob before encryption; `blockcipher_aes_ctr.go`: AES-256-CTR
//!      from the 16-byte nonce, HMAC-SHA256 over the ciphertext.
//!    - the KEK is `TfyYGL/...` from coco_keyprovider's README (`generate_keys.sh` output),
//!      given as base64 as its `encrypt.sh -k` takes it.
//!
//!    Plus the real annotation printed in coco_keyprovider's README (made by upstream; its
//!    KEK is unknown): we parse it and ask the KBS for the right `kid`.
//! 2. Us → upstream: what `cocoon-ctl image encrypt` writes goes through a mirror of
//!    upstream's decrypt side: ocicrypt-rs `encryption.rs` (comma split, STANDARD base64),
//!    CDH `hub/src/image/annotation_packet/v2.rs` (`AnnotationPacketV2`: `version` default
//!    and required `0.1.0`, `provider` default and required `kbs`, `iv`/`wrap_type`
//!    required, `kid` a `ResourceUri`), `v1.rs` + `attestation-agent/deps/crypto`
//!    (`WrapType` `A256GCM`/`A256CTR`, STANDARD base64, AES-256-GCM with a 12-byte iv), the
//!    kbc crate's v1 `AnnotationPacket` (exactly four fields), and ocicrypt-rs
//!    `blockcipher/mod.rs` (`PrivateLayerBlockCipherOptions`: `symkey`, `cipheroptions`,
//!    `digest` all required; `PublicLayerBlockCipherOptions`: `cipher`, `cipheroptions`,
//!    `hmac` all required). The layer itself is decrypted with the openssl CLI.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine as _;
use cocoon_image_pull::{ocicrypt, spec, Failure, LayerDescriptor};
use common::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const PROVIDER_ANN: &str = "org.opencontainers.image.enc.keys.provider.attestation-agent";

// ---- 1. the upstream vector ----
const UP_KEK_B64: &str = "TfyYGL/gBbtXwgDmx3a6N6WxFJFamcSRUFlpBPXu0f4=";
const UP_KID: &str = "kbs:///default/key/key_id1";
const UP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
const UP_BLOB_DIGEST: &str =
    "sha256:e529ee2047fe1bf145299d007c130469d3292b9e662a343a26e7e8717c4ba0fe";
const UP_DIFF_ID: &str = "sha256:db7610593743ffa0dfdfeb8a848f98bdd3e55fe3567150f48a26bc8272c31343";
const UP_LAYER_B64: &str = "3ik0n8AvjxCSRb8WBTk3bydniXVgCAo4PzO+xfWmS0Dh2gfL+Af4TNDc/Ti7lETxHQHphhuThu+wHfZgLAS4sCxR6oPsaWDGL22bTJgqpad4guytXlNUhBENAxexy0p6DX39DIza8bWG9ICvL+fLH5xLcAnGB3HO5IUDnPOQA591+VwMAUoDQZYEnSWFGEsnGBzAojNZtGD/88fr6RnlCkUkXAeFjYXQUjlLm3Gm6HpQac6L2zGnAtG+JjTXO1CkhJc=";
const UP_PRIVOPTS: &str = r#"{"symkey":"ix8MOl59nyFDZYepy+3wEjRWeJq83vD+3LqYdlQyEAE=","digest":"sha256:19fbc3945fd1ec2e8ab766fcc990948b1dc1e2f0a6ba9d50011b3000fbf109cc","cipheroptions":{"nonce":"Dx4tPEtaaXiHlqW0w9Lh8A=="}}"#;
const UP_PUBOPTS: &str = "eyJjaXBoZXIiOiJBRVNfMjU2X0NUUl9ITUFDX1NIQTI1NiIsImhtYWMiOiI3ekVZKyt1VDlZSGFqSk9HRE5jRWV1Z1p4UFJZb09UL3Erc20rU0w4UERzPSIsImNpcGhlcm9wdGlvbnMiOnt9fQ==";
const UP_PACKET: &str = r#"{"kid":"kbs:///default/key/key_id1","wrapped_data":"Knczv2zSP/TF6ICo49bCksyLFGKqRbx9FO2zgORJWE84CGN4m5cDIpxj9kOP9A378RyxNQBncxgxEHNQoHh0SX0Rq5hH1SXMJSq1OWFbZ9H2ngxKS57ximfy4ao7tOB71C9h6eOPz0gQCNSnD+5vczsckQOGHEBLc76UsW1j4OmpqOnv7YoJX1V0Tlf9Hq04fho/0MDuuzlwdMp+kN1hWh9m8Cm2eHRHPYZoedYqva37nSdIYWCQGMNj806ufVkYSOSMQZAG9Bop39nFKBxzGuE=","iv":"obLD1OX2BxgpOktc","wrap_type":"A256GCM"}"#;
const UP_ANNOTATION: &str = "eyJraWQiOiJrYnM6Ly8vZGVmYXVsdC9rZXkva2V5X2lkMSIsIndyYXBwZWRfZGF0YSI6IktuY3p2MnpTUC9URjZJQ280OWJDa3N5TEZHS3FSYng5Rk8yemdPUkpXRTg0Q0dONG01Y0RJcHhqOWtPUDlBMzc4Unl4TlFCbmN4Z3hFSE5Rb0hoMFNYMFJxNWhIMVNYTUpTcTFPV0ZiWjlIMm5neEtTNTd4aW1meTRhbzd0T0I3MUM5aDZlT1B6MGdRQ05TbkQrNXZjenNja1FPR0hFQkxjNzZVc1cxajRPbXBxT252N1lvSlgxVjBUbGY5SHEwNGZoby8wTUR1dXpsd2RNcCtrTjFoV2g5bThDbTJlSFJIUFlab2VkWXF2YTM3blNkSVlXQ1FHTU5qODA2dWZWa1lTT1NNUVpBRzlCb3AzOW5GS0J4ekd1RT0iLCJpdiI6Im9iTEQxT1gyQnhncE9rdGMiLCJ3cmFwX3R5cGUiOiJBMjU2R0NNIn0=";

/// The annotation printed in guest-components' coco_keyprovider README ("Inspecting the
/// image"), made by upstream for `kbs:///default/key/key_id1` (KEK not published).
const README_ANNOTATION: &str = "eyJraWQiOiJrYnM6Ly8vZGVmYXVsdC9rZXkva2V5X2lkMSIsIndyYXBwZWRfZGF0YSI6IjNFZ1FidzZDUlY0YmlrMnNLM3RrTUpweWNWV0RVZXVIY1luZ1drZFd1K0swQXpDUGY3dFlCQ1oxSGxXaWFsZmdFdEQxdDBuc3N2YS81aElFbUxPbXZjYXJ2SGlNdERyRElhY1JIdElOTHFyUUpCZUY1M2Q4MTN1L0dDK3prL3RHeEF3ZVd6ZTR1S0VROG1qc2hyMytiYll3RUhKdVFyM3VncWlXRTlnNUhndU1HVmVFZ2ZReWR2dS9TZmVYMmZSeTRQWmtGcjhWbkQ3WjRrNUhXVkhaTWY0U21oSUhhUnlVa1NoT3B4dVdQcG54OW9IaGJSMEdKd2Zwb3l4TzRydEpYaTI4ODVxZ1Uya0dVaFo2RTJTbmgrQT0iLCJpdiI6IjRlekxiZU1RZEVrWS9pdUYiLCJ3cmFwX3R5cGUiOiJBMjU2R0NNIn0=";
const README_PUBOPTS: &str = "eyJjaXBoZXIiOiJBRVNfMjU2X0NUUl9ITUFDX1NIQTI1NiIsImhtYWMiOiJQM08rQ1lhRGNSNkJteEpvdWlFV0lYM05XN1l2Nk5UcEp5dmhlNlBmbFA4PSIsImNpcGhlcm9wdGlvbnMiOnt9fQ==";

#[test]
fn upstream_coco_keyprovider_layer_decrypts_with_ours() {
    // The vector is self-consistent.
    assert_eq!(B64.decode(UP_ANNOTATION).unwrap(), UP_PACKET.as_bytes());
    let kek = B64.decode(UP_KEK_B64).unwrap();
    let blob = B64.decode(UP_LAYER_B64).unwrap();
    assert_eq!(sha256(&blob), UP_BLOB_DIGEST);

    // Our keyprovider's keyunwrap opens the packet (KEK file in base64, as encrypt.sh -k).
    let dir = tempfile::tempdir().unwrap();
    let kek_file = dir.path().join("kek.b64");
    std::fs::write(&kek_file, format!("{UP_KEK_B64}\n")).unwrap();
    let req = format!(
        r#"{{"op":"keyunwrap","keywrapparams":{{"ec":null,"optsdata":null}},"keyunwrapparams":{{"dc":{{"Parameters":{{"attestation-agent":["{}"]}}}},"annotation":"{}"}}}}"#,
        b64(format!("keypath={}", kek_file.display()).as_bytes()),
        UP_ANNOTATION
    );
    let out = ctl_stdin(&["keyprovider"], req.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let optsdata = B64
        .decode(v["keyunwrapresults"]["optsdata"].as_str().unwrap())
        .unwrap();
    assert_eq!(optsdata, UP_PRIVOPTS.as_bytes());

    // The guest's pipeline decrypts, verifies and unpacks the layer.
    let desc = LayerDescriptor {
        media_type: UP_MEDIA_TYPE.into(),
        digest: UP_BLOB_DIGEST.into(),
        size: blob.len() as u64,
        annotations: BTreeMap::from([
            (PROVIDER_ANN.to_owned(), UP_ANNOTATION.to_owned()),
            (spec::ANNOTATION_PUBOPTS.to_owned(), UP_PUBOPTS.to_owned()),
        ]),
    };
    let dest = dir.path().join("rootfs");
    unpack(&desc, UP_DIFF_ID, &blob, &keys(UP_KID, &kek), &dest).unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/upstream.txt")).unwrap(),
        "encrypted by upstream coco_keyprovider + ocicrypt\n"
    );
    assert_eq!(
        std::fs::read_link(dest.join("etc/link")).unwrap(),
        std::path::PathBuf::from("upstream.txt")
    );
}

#[test]
fn upstream_readme_annotation_is_understood() {
    let ann = BTreeMap::from([
        (PROVIDER_ANN.to_owned(), README_ANNOTATION.to_owned()),
        (
            spec::ANNOTATION_PUBOPTS.to_owned(),
            README_PUBOPTS.to_owned(),
        ),
    ]);
    // Public options parse (the real HMAC is 32 bytes).
    ocicrypt::public_hmac(&ann).unwrap();
    // The guest asks the KBS for the packet's kid; a wrong KEK is reported as such.
    let e = ocicrypt::unwrap_layer_key(&ann, &keys(UP_KID, &random(32))).unwrap_err();
    assert!(matches!(e, Failure::WrongKey(_)), "{e}");
    let e = ocicrypt::unwrap_layer_key(&ann, &keys("kbs:///other/key/1", &random(32))).unwrap_err();
    assert!(matches!(e, Failure::NoKey(_)), "{e}");
    assert!(e.to_string().contains(UP_KID), "{e}");
    // Our keyprovider parses it too and says the KEK does not open it.
    let dir = tempfile::tempdir().unwrap();
    let (kek, _) = keygen(dir.path(), "kek");
    let req = format!(
        r#"{{"op":"keyunwrap","keyunwrapparams":{{"dc":null,"annotation":"{README_ANNOTATION}"}}}}"#
    );
    let out = ctl_stdin(
        &["keyprovider", "--kek", kek.to_str().unwrap()],
        req.as_bytes(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open"));
}

// ---- 2. a mirror of upstream's decrypt side ----

/// CDH `AnnotationPacketV2`.
#[derive(Deserialize)]
struct UpstreamPacketV2 {
    #[serde(default = "default_version")]
    version: String,
    kid: String,
    wrapped_data: String,
    #[serde(default = "default_provider")]
    provider: String,
    iv: Option<String>,
    wrap_type: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    provider_settings: serde_json::Map<String, Value>,
    #[serde(default)]
    #[allow(dead_code)]
    annotations: serde_json::Map<String, Value>,
}

fn default_version() -> String {
    "0.1.0".into()
}

fn default_provider() -> String {
    "kbs".into()
}

/// The kbc crate's / coco_keyprovider's v1 `AnnotationPacket` (kid as a string here).
#[derive(Deserialize, Serialize)]
struct UpstreamPacketV1 {
    kid: String,
    wrapped_data: String,
    iv: String,
    wrap_type: String,
}

/// ocicrypt-rs `PrivateLayerBlockCipherOptions`: every field required.
#[derive(Deserialize)]
struct UpstreamPrivate {
    symkey: String,
    cipheroptions: HashMap<String, String>,
    digest: String,
}

/// ocicrypt-rs `PublicLayerBlockCipherOptions`: every field required.
#[derive(Deserialize)]
struct UpstreamPublic {
    cipher: String,
    cipheroptions: HashMap<String, String>,
    hmac: String,
}

/// `resource_uri::ResourceUri::try_from(&str)` as far as the KBS plugin needs: a URL with
/// scheme `kbs`, an optional host, and `/<repo>/<type>/<tag>`.
fn upstream_resource_uri(kid: &str) -> (String, Vec<String>) {
    let rest = kid.strip_prefix("kbs://").expect("scheme must be kbs");
    let (host, path) = rest.split_once('/').expect("a path");
    let segs: Vec<String> = path.split('/').map(str::to_owned).collect();
    assert_eq!(segs.len(), 3, "resource plugin path is repo/type/tag");
    assert!(segs.iter().all(|s| !s.is_empty()));
    (host.to_owned(), segs)
}

/// What upstream's reader does with one annotation value and the KEK: the private options.
fn upstream_unwrap(value: &str, kek: &[u8]) -> Vec<u8> {
    let strict = base64::engine::general_purpose::STANDARD;
    let items: Vec<&str> = value.split(',').collect();
    assert_eq!(items.len(), 1);
    let packet = strict.decode(items[0]).expect("STANDARD base64");
    let text = std::str::from_utf8(&packet).unwrap();
    // v1 shape, byte for byte as upstream serialises it.
    let v1: UpstreamPacketV1 = serde_json::from_str(text).unwrap();
    assert_eq!(
        serde_json::to_string(&v1).unwrap(),
        text,
        "v1 field order, nothing else"
    );
    let p: UpstreamPacketV2 = serde_json::from_str(text).unwrap();
    assert_eq!(p.version, "0.1.0");
    assert_eq!(p.provider, "kbs");
    upstream_resource_uri(&p.kid);
    let wrap_type = p.wrap_type.expect("wrap_type");
    assert!(["A256GCM", "A256CTR"].contains(&wrap_type.as_str()));
    assert_eq!(wrap_type, "A256GCM");
    let iv = strict.decode(p.iv.expect("iv")).unwrap();
    assert_eq!(iv.len(), 12);
    let wrapped = strict.decode(&p.wrapped_data).unwrap();
    aes_gcm::Aes256Gcm::new_from_slice(kek)
        .unwrap()
        .decrypt(iv.as_slice().into(), wrapped.as_slice())
        .expect("AES-256-GCM opens")
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn what_we_write_is_what_upstream_reads() {
    if !have("openssl") {
        skip("openssl not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("img");
    let img = make_layout(&layout, "v1", false);
    let (kek_path, kek) = keygen(dir.path(), "kek");
    ctl_ok(&[
        "image",
        "encrypt",
        "--kek",
        kek_path.to_str().unwrap(),
        "--kid",
        KID,
        layout.to_str().unwrap(),
    ]);
    let (_, m) = manifest_for(&layout, "v1");
    let strict = base64::engine::general_purpose::STANDARD;
    for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
        // ocicrypt-rs spec.rs media types.
        assert!(
            [
                "application/vnd.oci.image.layer.v1.tar+encrypted",
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
            ]
            .contains(&l["mediaType"].as_str().unwrap()),
            "{l}"
        );
        let ann = &l["annotations"];
        let privopts = upstream_unwrap(ann[PROVIDER_ANN].as_str().unwrap(), &kek);
        let private: UpstreamPrivate = serde_json::from_slice(&privopts).unwrap();
        let symkey = strict.decode(&private.symkey).unwrap();
        assert_eq!(symkey.len(), 32);
        assert_eq!(private.cipheroptions.len(), 1);
        let nonce = strict.decode(&private.cipheroptions["nonce"]).unwrap();
        assert_eq!(nonce.len(), 16);
        // Go's ocicrypt records the blob before encryption.
        assert_eq!(private.digest, img.layer_digests[i]);
        // Go's field order too.
        assert!(std::str::from_utf8(&privopts)
            .unwrap()
            .starts_with(r#"{"symkey":""#));

        let public: UpstreamPublic = serde_json::from_slice(
            &strict
                .decode(ann[spec::ANNOTATION_PUBOPTS].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(public.cipher, "AES_256_CTR_HMAC_SHA256");
        assert!(public.cipheroptions.is_empty());
        let hmac = strict.decode(&public.hmac).unwrap();

        // The layer with openssl: HMAC over the ciphertext, AES-256-CTR from the nonce.
        let digest = l["digest"].as_str().unwrap();
        let cpath = blob_path(&layout, digest);
        let c = cpath.to_str().unwrap();
        let mac = openssl(&[
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{}", hex::encode(&symkey)),
            "-binary",
            c,
        ]);
        assert_eq!(mac, hmac);
        let plain = openssl(&[
            "enc",
            "-d",
            "-aes-256-ctr",
            "-nosalt",
            "-K",
            &hex::encode(&symkey),
            "-iv",
            &hex::encode(&nonce),
            "-in",
            c,
        ]);
        assert_eq!(sha256(&plain), img.layer_digests[i]);
    }
}
