//! `cocoon-ctl keyprovider` through the binary with the requests ocicrypt sends a `cmd` key
//! provider: Go's (`keywrap/keyprovider/keyprovider.go`: `[]byte` as base64 strings,
//! `EncryptConfig` with `Parameters`/`DecryptConfig`, an empty `keyunwrapparams`) and the
//! Rust CoCo code's (integer arrays; ocicrypt-rs's `optsdata` as JSON text). The annotation
//! it answers opens with the guest's decrypter (`cocoon_image_pull::ocicrypt`).
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::collections::BTreeMap;

use base64::Engine as _;
use cocoon_image_pull::{ocicrypt, spec};
use common::*;
use serde_json::{json, Value};

const PROVIDER_ANN: &str = "org.opencontainers.image.enc.keys.provider.attestation-agent";

fn privopts(symkey: &[u8], nonce: &[u8]) -> String {
    format!(
        r#"{{"symkey":"{}","digest":"sha256:{}","cipheroptions":{{"nonce":"{}"}}}}"#,
        b64(symkey),
        "ab".repeat(32),
        b64(nonce)
    )
}

fn pubopts() -> String {
    b64(format!(
        r#"{{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"{}","cipheroptions":{{}}}}"#,
        b64(&[9u8; 32])
    )
    .as_bytes())
}

/// Exactly what Go's `json.Marshal(KeyProviderKeyWrapProtocolInput{..})` writes for
/// `skopeo copy --encryption-key provider:attestation-agent:<params>`.
fn go_keywrap(params: &str, optsdata: &[u8]) -> String {
    format!(
        r#"{{"op":"keywrap","keywrapparams":{{"ec":{{"Parameters":{{"attestation-agent":["{}"]}},"DecryptConfig":{{"Parameters":{{}}}}}},"optsdata":"{}"}},"keyunwrapparams":{{"dc":null,"annotation":null}}}}"#,
        b64(params.as_bytes()),
        b64(optsdata)
    )
}

fn go_keyunwrap(params: Option<&str>, annotation: &[u8]) -> String {
    let dc = match params {
        Some(p) => format!(
            r#"{{"Parameters":{{"attestation-agent":["{}"]}}}}"#,
            b64(p.as_bytes())
        ),
        None => "null".into(),
    };
    format!(
        r#"{{"op":"keyunwrap","keywrapparams":{{"ec":null,"optsdata":null}},"keyunwrapparams":{{"dc":{dc},"annotation":"{}"}}}}"#,
        b64(annotation)
    )
}

fn run(args: &[&str], input: &str) -> Value {
    let out = ctl_stdin(&[&["keyprovider"], args].concat(), input.as_bytes());
    assert!(
        out.status.success(),
        "{input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails(args: &[&str], input: &str, want: &str) {
    let out = ctl_stdin(&[&["keyprovider"], args].concat(), input.as_bytes());
    assert!(!out.status.success(), "{input}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "{input}: {err}");
    assert!(out.stdout.is_empty());
}

/// The guest opens `packet` (JSON bytes) with `kek` and finds `symkey`/`nonce`.
fn guest_opens(packet: &[u8], kek: &[u8], symkey: &[u8], nonce: &[u8]) {
    let ann = BTreeMap::from([
        (PROVIDER_ANN.to_owned(), b64(packet)),
        (spec::ANNOTATION_PUBOPTS.to_owned(), pubopts()),
    ]);
    let key = ocicrypt::unwrap_layer_key(&ann, &keys(KID, kek)).unwrap();
    assert_eq!(&key.symkey[..], symkey);
    assert_eq!(&key.nonce[..], nonce);
    let e = ocicrypt::unwrap_layer_key(&ann, &keys(KID, &random(32))).unwrap_err();
    assert!(e.to_string().contains("does not open"), "{e}");
}

#[test]
fn go_requests_base64_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (kek_path, kek) = keygen(dir.path(), "kek");
    let (symkey, nonce) = (random(32), random(16));
    let opts = privopts(&symkey, &nonce);
    let params = format!(
        "keyid={KID}::keypath={}::algorithm=A256GCM",
        kek_path.display()
    );

    let answer = run(&[], &go_keywrap(&params, opts.as_bytes()));
    let ann = answer["keywrapresults"]["annotation"].as_str().unwrap();
    // Go's []byte: standard base64 with padding.
    let packet = B64.decode(ann).unwrap();
    assert_eq!(b64(&packet), ann);
    let p: Value = serde_json::from_slice(&packet).unwrap();
    assert_eq!(p["kid"], KID);
    assert_eq!(p["wrap_type"], "A256GCM");
    assert_eq!(answer.as_object().unwrap().len(), 1);
    guest_opens(&packet, &kek, &symkey, &nonce);

    // keyunwrap, the KEK from the decryption parameters (`--decryption-key
    // provider:attestation-agent:keypath=..`).
    let back = run(&[], &go_keyunwrap(Some(&params), &packet));
    let optsdata = B64
        .decode(back["keyunwrapresults"]["optsdata"].as_str().unwrap())
        .unwrap();
    assert_eq!(optsdata, opts.as_bytes());
    // ... or from --kek when the parameters name none.
    let back = run(
        &["--kek", kek_path.to_str().unwrap()],
        &go_keyunwrap(None, &packet),
    );
    assert_eq!(
        B64.decode(back["keyunwrapresults"]["optsdata"].as_str().unwrap())
            .unwrap(),
        opts.as_bytes()
    );
    // A wrong KEK for unwrap: refused.
    let (other, _) = keygen(dir.path(), "other");
    fails(
        &["--kek", other.to_str().unwrap()],
        &go_keyunwrap(None, &packet),
        "does not open",
    );
}

#[test]
fn rust_requests_int_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let (kek_path, kek) = keygen(dir.path(), "kek");
    let (symkey, nonce) = (random(32), random(16));
    let opts = privopts(&symkey, &nonce);
    let params = format!("keyid={KID}::keypath={}", kek_path.display());
    let ints = |b: &[u8]| Value::Array(b.iter().map(|x| json!(x)).collect());

    // Integer arrays everywhere (serde's Vec<u8>), answer as arrays.
    let req = json!({"op": "keywrap",
        "keywrapparams": {"ec": {"Parameters": {"attestation-agent": [ints(params.as_bytes())]},
                                  "DecryptConfig": {"Parameters": null}},
                          "optsdata": ints(opts.as_bytes())}});
    let answer = run(&["--byte-encoding", "array"], &req.to_string());
    let packet: Vec<u8> = answer["keywrapresults"]["annotation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect();
    guest_opens(&packet, &kek, &symkey, &nonce);

    // ocicrypt-rs's keywrap: base64 Parameters, optsdata as the JSON text itself.
    let req = json!({"op": "keywrap",
        "keywrapparams": {"ec": {"Parameters": {"attestation-agent": [b64(params.as_bytes())]},
                                  "DecryptConfig": {"Parameters": {}}},
                          "optsdata": opts},
        "keyunwrapparams": {"dc": null, "annotation": null}});
    let answer = run(&[], &req.to_string());
    let packet = B64
        .decode(answer["keywrapresults"]["annotation"].as_str().unwrap())
        .unwrap();
    guest_opens(&packet, &kek, &symkey, &nonce);

    // keyunwrap with an int-array annotation, answered as an array.
    let req = json!({"op": "keyunwrap",
        "keyunwrapparams": {"dc": {"Parameters": {}}, "annotation": ints(&packet)}});
    let back = run(
        &[
            "--kek",
            kek_path.to_str().unwrap(),
            "--byte-encoding",
            "array",
        ],
        &req.to_string(),
    );
    assert_eq!(back["keyunwrapresults"]["optsdata"], ints(opts.as_bytes()));
}

#[test]
fn provider_name_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (kek_path, kek) = keygen(dir.path(), "kek");
    let (symkey, nonce) = (random(32), random(16));
    let opts = privopts(&symkey, &nonce);
    let kp = kek_path.display();

    // Another provider name in ocicrypt.conf: its Parameters entry is ours.
    let req = go_keywrap(&format!("keyid={KID}::keypath={kp}"), opts.as_bytes())
        .replace("\"attestation-agent\"", "\"cocoon\"");
    fails(
        &[],
        &req,
        "no parameters for provider \"attestation-agent\"",
    );
    let answer = run(&["--provider-name", "cocoon"], &req);
    let packet = B64
        .decode(answer["keywrapresults"]["annotation"].as_str().unwrap())
        .unwrap();
    guest_opens(&packet, &kek, &symkey, &nonce);

    let o = opts.as_bytes();
    fails(&[], &go_keywrap("sample=true", o), "sample");
    fails(&[], &go_keywrap(&format!("keypath={kp}"), o), "keyid");
    fails(&[], &go_keywrap(&format!("keyid={KID}"), o), "keypath");
    fails(
        &[],
        &go_keywrap(&format!("keyid={KID}::keypath={kp}::algorithm=A256CTR"), o),
        "A256GCM",
    );
    fails(
        &[],
        &go_keywrap(&format!("keyid=/default/key/1::keypath={kp}"), o),
        "kbs://",
    );
    fails(
        &[],
        &go_keywrap(&format!("keyid={KID}::keypath=/nonexistent/kek"), o),
        "/nonexistent/kek",
    );
    fails(&[], r#"{"op":"bogus"}"#, "unknown op");
    fails(&[], "not json", "not JSON");
    let two = go_keywrap(&format!("keyid={KID}::keypath={kp}"), o).replace(
        "\"attestation-agent\":[\"",
        &format!(
            "\"attestation-agent\":[\"{}\",\"",
            b64(format!("keyid=kbs:///a/b/c::keypath={kp}").as_bytes())
        ),
    );
    fails(&[], &two, "one KEK per image");
}

/// The whole path skopeo with a key-provider-capable ocicrypt takes (`encryption.go`):
/// encrypt the layer (here with the openssl CLI), marshal the private options, call the
/// `cmd` provider with them, base64 its `annotation` into
/// `org.opencontainers.image.enc.keys.provider.attestation-agent`; then the guest pulls.
#[test]
fn as_an_ocicrypt_driver_would_use_it() {
    if !have("openssl") {
        skip("openssl not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (kek_path, kek) = keygen(dir.path(), "kek");
    let big = random(100_000);
    let blob = gzip(&layer_tar(0, &big));
    let (symkey, nonce) = (random(32), random(16));
    let plain = dir.path().join("plain");
    let cipher = dir.path().join("cipher");
    std::fs::write(&plain, &blob).unwrap();
    let run_openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    run_openssl(&[
        "enc",
        "-aes-256-ctr",
        "-nosalt",
        "-K",
        &hex::encode(&symkey),
        "-iv",
        &hex::encode(&nonce),
        "-in",
        plain.to_str().unwrap(),
        "-out",
        cipher.to_str().unwrap(),
    ]);
    let mac = run_openssl(&[
        "dgst",
        "-sha256",
        "-mac",
        "HMAC",
        "-macopt",
        &format!("hexkey:{}", hex::encode(&symkey)),
        "-binary",
        cipher.to_str().unwrap(),
    ]);
    let encrypted = std::fs::read(&cipher).unwrap();
    let privopts = format!(
        r#"{{"symkey":"{}","digest":"{}","cipheroptions":{{"nonce":"{}"}}}}"#,
        b64(&symkey),
        sha256(&blob),
        b64(&nonce)
    );
    let params = format!("keyid={KID}::keypath={}", kek_path.display());
    let answer = run(&[], &go_keywrap(&params, privopts.as_bytes()));
    let packet = B64
        .decode(answer["keywrapresults"]["annotation"].as_str().unwrap())
        .unwrap();
    let desc = cocoon_image_pull::LayerDescriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into(),
        digest: sha256(&encrypted),
        size: encrypted.len() as u64,
        annotations: BTreeMap::from([
            (PROVIDER_ANN.to_owned(), b64(&packet)),
            (
                spec::ANNOTATION_PUBOPTS.to_owned(),
                b64(format!(
                    r#"{{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"{}","cipheroptions":{{}}}}"#,
                    b64(&mac)
                )
                .as_bytes()),
            ),
        ]),
    };
    let dest = dir.path().join("rootfs");
    unpack(
        &desc,
        &sha256(&layer_tar(0, &big)),
        &encrypted,
        &keys(KID, &kek),
        &dest,
    )
    .unwrap();
    check_files(&dest, 0, &big);
}
