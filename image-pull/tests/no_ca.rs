//! A guest image without CA certificates: the registry client says so (oci-client would
//! otherwise panic building its fallback TLS client, taking PID 1 with it). Its own test
//! binary: it points SSL_CERT_FILE/SSL_CERT_DIR at nothing for the whole process.
#![allow(clippy::unwrap_used)]

use cocoon_image_pull::registry::{OciRegistry, RegistryError, RegistryOptions};

#[test]
fn no_root_certificates_is_a_clear_error_not_a_panic() {
    let empty = tempfile::tempdir().unwrap();
    let file = empty.path().join("none.pem");
    std::fs::write(&file, b"").unwrap();
    // One test in this binary: nothing else reads the environment meanwhile.
    std::env::set_var("SSL_CERT_FILE", &file);
    std::env::set_var("SSL_CERT_DIR", empty.path());
    let e = OciRegistry::new(RegistryOptions::default())
        .err()
        .expect("no CA certificates must be refused");
    assert!(matches!(e, RegistryError::Config(_)), "{e}");
    assert!(e.to_string().contains("no CA certificates"), "{e}");
    // Extra roots do not make up for it (oci-client builds a default client anyway).
    let ca_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kbs/tests/data/ca.pem");
    let e = OciRegistry::new(RegistryOptions {
        extra_root_certificates: vec![std::fs::read(&ca_path).unwrap()],
        ..Default::default()
    })
    .err()
    .expect("still refused");
    assert!(e.to_string().contains("no CA certificates"), "{e}");
    // A bundle where the system looks for one: it builds.
    std::env::set_var("SSL_CERT_FILE", &ca_path);
    OciRegistry::new(RegistryOptions::default()).unwrap();
}
