#![allow(clippy::unwrap_used)]
//! `cocoon-ctl secret` through the binary: keygen → seal → inspect → verify.

use std::process::Command;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cocoon-ctl"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = ctl(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn keygen_seal_inspect_verify() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.jwk");
    let public = dir.path().join("pub.jwk");
    let (k, p) = (key.to_str().unwrap(), public.to_str().unwrap());
    ok(&["secret", "keygen", "--private-out", k, "--public-out", p]);
    let jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
    assert!(jwk["d"].is_string());

    let sealed = ok(&[
        "secret",
        "seal",
        "--signing-key",
        k,
        "--kid",
        "kbs:///default/sealing/pub",
        "--resource",
        "kbs:///default/key/1",
    ]);
    let sealed = sealed.trim();
    assert!(
        sealed.starts_with("sealed.eyJiNjQiOnRydWUsImFsZyI6IkVTMjU2Ii"),
        "{sealed}"
    );
    assert_eq!(sealed.split('.').count(), 4);

    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["secret", "inspect", sealed])).unwrap();
    assert_eq!(
        shown,
        serde_json::json!({
            "header": {"b64": true, "alg": "ES256", "kid": "kbs:///default/sealing/pub"},
            "payload": {"version": "0.1.0", "type": "vault", "name": "kbs:///default/key/1",
                        "provider": "kbs", "provider_settings": {}, "annotations": {}},
        })
    );
    let file = dir.path().join("sealed.txt");
    std::fs::write(&file, format!("{sealed}\n")).unwrap();
    let at = format!("@{}", file.display());
    assert_eq!(
        ok(&["secret", "verify", "--public-key", p, &at]).trim(),
        "signature ok"
    );

    // Upstream's flag names work too.
    let again = ok(&[
        "secret",
        "seal",
        "--signing-jwk-path",
        k,
        "--signing-kid",
        "my-key",
        "--resource-uri",
        "kbs:///default/key/2",
        "--annotations",
        r#"{"note":"x"}"#,
    ]);
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["secret", "inspect", again.trim()])).unwrap();
    assert_eq!(shown["payload"]["annotations"]["note"], "x");
    assert_eq!(shown["header"]["kid"], "my-key");

    // Failures exit non-zero and say why.
    let other = dir.path().join("other.jwk");
    let other_pub = dir.path().join("other-pub.jwk");
    ok(&[
        "secret",
        "keygen",
        "--private-out",
        other.to_str().unwrap(),
        "--public-out",
        other_pub.to_str().unwrap(),
    ]);
    let out = ctl(&[
        "secret",
        "verify",
        "--public-key",
        other_pub.to_str().unwrap(),
        sealed,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not verify"));
    let out = ctl(&[
        "secret",
        "keygen",
        "--private-out",
        k,
        "--public-out",
        "/nonexistent/x",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = ctl(&[
        "secret",
        "seal",
        "--signing-key",
        p,
        "--kid",
        "k",
        "--resource",
        "kbs:///a/b/c",
    ]);
    assert!(!out.status.success(), "a public JWK cannot sign");
    let out = ctl(&[
        "secret",
        "seal",
        "--signing-key",
        k,
        "--kid",
        "k",
        "--resource",
        "default/key/1",
    ]);
    assert!(!out.status.success(), "the resource must be a kbs:// URI");
}
