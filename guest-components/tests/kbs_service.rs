#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The agent-wide [`KbsService`] against the test double of Trustee's KBS
//! (`common/mod.rs`): one shared attestation across threads, token expiry, single-flight
//! re-attestation, Trustee's 401 error types, retries and deadlines, metrics.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cocoon_attester::Attester;
use cocoon_guest_components::{
    BoxError, Error, EvidenceProvider, KbsService, KbsSettings, ResourceSource, RetryPolicy,
};
use common::{Kbs, ERR_PREFIX};
use kbs_types::Tee;
use serde_json::json;

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_attempts: 3,
        deadline: Duration::from_secs(10),
    }
}

fn settings(url: &str) -> KbsSettings {
    let mut s = KbsSettings::new(url);
    s.retry = fast_retries();
    s
}

fn service(kbs: &Kbs) -> KbsService<Attester> {
    KbsService::new(settings(&kbs.url), Attester::sample()).unwrap()
}

#[test]
fn settings_defaults() {
    let s = KbsSettings::new("http://kbs:8080");
    assert_eq!(s.url, "http://kbs:8080");
    assert_eq!(s.ca_cert_pem, None);
    assert_eq!(s.init_data, None);
    assert_eq!(s.token_margin, Duration::from_secs(60));
    assert_eq!(
        s.retry,
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_attempts: 5,
            deadline: Duration::from_secs(30),
        }
    );
    let svc = KbsService::new(KbsSettings::new("http://kbs:8080/"), Attester::sample()).unwrap();
    assert_eq!(svc.kbs_url(), "http://kbs:8080");
    assert_eq!(svc.handshakes(), 0);
    let err = KbsService::new(KbsSettings::new("kbs:8080"), Attester::sample()).unwrap_err();
    assert!(matches!(err, Error::BadKbsUrl { .. }), "{err:?}");
    assert_eq!((err.reason(), err.step()), ("config", "config"));
}

#[test]
fn service_is_send_sync_and_a_resource_source() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<KbsService<Attester>>();
    send_sync::<KbsService<Arc<Attester>>>();

    let kbs = Kbs::start();
    let svc = Arc::new(KbsService::new(settings(&kbs.url), Arc::new(Attester::sample())).unwrap());
    let source: Arc<dyn ResourceSource> = svc.clone();
    assert_eq!(
        source
            .get_resource("kbs:///default/key/1")
            .unwrap()
            .as_slice(),
        b"key one"
    );
    assert_eq!(svc.handshakes(), 1);
}

#[test]
fn twenty_resources_from_eight_threads_share_one_handshake() {
    let kbs = Kbs::start();
    for i in 0..20 {
        kbs.put(
            &format!("default/key/r{i}"),
            format!("value {i}").as_bytes(),
        );
    }
    // A slow auth, so that every thread arrives while the handshake is in flight.
    kbs.with(|s| s.auth_delay = Duration::from_millis(200));
    let svc = Arc::new(service(&kbs));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let svc = svc.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                for i in (t..20).step_by(8) {
                    let v = svc
                        .get_resource(&format!("kbs:///default/key/r{i}"))
                        .unwrap();
                    assert_eq!(v.as_slice(), format!("value {i}").as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(svc.handshakes(), 1);
    assert_eq!(
        kbs.with(|s| (
            s.auths,
            s.attests,
            s.resource_gets,
            s.resource_cookies.len()
        )),
        (1, 1, 20, 1)
    );
    let m = svc.metrics();
    assert_eq!((m.attempts(), m.successes()), (1, 1));
    for i in 0..20 {
        assert_eq!(m.releases(&format!("default/key/r{i}")), 1, "r{i}");
    }
}

#[test]
fn token_expiry_renews_with_exactly_one_handshake() {
    let kbs = Kbs::start();
    // Tokens live 3 s (by `exp`, whole seconds; the double refuses them afterwards);
    // renew 1 s before.
    kbs.with(|s| s.token_ttl = Some(3));
    let mut settings = settings(&kbs.url);
    settings.token_margin = Duration::from_secs(1);
    let svc = Arc::new(KbsService::new(settings, Attester::sample()).unwrap());
    svc.get_resource("kbs:///default/key/1").unwrap();
    svc.get_resource("kbs:///default/key/2").unwrap();
    svc.attest().unwrap();
    assert_eq!(svc.handshakes(), 1);
    let first_key = serde_json::to_string(&svc.tee_pubkey().unwrap()).unwrap();

    // Past exp - margin: eight threads at once, exactly one new handshake, and no request
    // ever made with the expired token.
    thread::sleep(Duration::from_millis(2100));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let svc = svc.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                svc.get_resource("kbs:///default/key/1").unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().as_slice(), b"key one");
    }
    assert_eq!(svc.handshakes(), 2);
    assert_eq!(
        kbs.with(|s| (s.auths, s.attests, s.resource_gets)),
        (2, 2, 10)
    );
    // A fresh TEE key for the new session.
    assert_ne!(
        serde_json::to_string(&svc.tee_pubkey().unwrap()).unwrap(),
        first_key
    );
    svc.get_resource("kbs:///default/key/2").unwrap();
    assert_eq!(svc.handshakes(), 2);
    assert_eq!(svc.metrics().successes(), 2);
}

#[test]
fn token_with_past_exp_is_kept_until_the_kbs_refuses_it() {
    // A skewed guest clock must not cause a handshake per request.
    let kbs = Kbs::start();
    kbs.with(|s| s.token_ttl = Some(0));
    let svc = service(&kbs);
    // The double's exp is "now": expired by our clock at once, yet it is kept.
    svc.attest().unwrap();
    svc.attest().unwrap();
    assert_eq!(svc.handshakes(), 1);
}

#[test]
fn kbs_side_session_loss_reattests_once_for_all_threads() {
    let kbs = Kbs::start();
    let svc = Arc::new(service(&kbs));
    svc.get_resource("kbs:///default/key/1").unwrap();
    kbs.with(|s| {
        s.expire_sessions = true;
        s.auth_delay = Duration::from_millis(100);
    });
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let svc = svc.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                svc.get_resource("kbs:///default/key/2").unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().as_slice(), b"key two");
    }
    assert_eq!(svc.handshakes(), 2);
    assert_eq!(kbs.with(|s| (s.auths, s.attests)), (2, 2));
}

#[test]
fn session_error_types_that_reattest() {
    for kind in ["TokenNotFound", "ExpiredCookie", "InvalidCookie"] {
        let kbs = Kbs::start();
        kbs.with(|s| s.session_error = kind);
        let svc = service(&kbs);
        svc.get_resource("kbs:///default/key/1").unwrap();
        kbs.with(|s| s.expire_sessions = true);
        assert_eq!(
            svc.get_resource("kbs:///default/key/2").unwrap().as_slice(),
            b"key two",
            "{kind}"
        );
        assert_eq!(svc.handshakes(), 2, "{kind}");
        assert_eq!(kbs.with(|s| s.resource_gets), 3, "{kind}");
    }
}

#[test]
fn other_401_types_do_not_reattest() {
    let kbs = Kbs::start();
    kbs.with(|s| s.session_error = "UnAuthorized");
    let svc = service(&kbs);
    svc.get_resource("kbs:///default/key/1").unwrap();
    kbs.with(|s| s.expire_sessions = true);
    let err = svc.get_resource("kbs:///default/key/2").unwrap_err();
    assert!(
        matches!(&err, Error::Status { step: "resource", status: 401, kind, .. }
            if kind == &format!("{ERR_PREFIX}UnAuthorized")),
        "{err:?}"
    );
    assert_eq!(err.reason(), "unauthorized");
    assert_eq!(svc.handshakes(), 1);
    assert_eq!(kbs.with(|s| s.resource_gets), 2);
}

#[test]
fn policy_deny_is_denied_without_reattest() {
    let kbs = Kbs::start();
    kbs.with(|s| s.deny.push("default/key/2".into()));
    let svc = service(&kbs);
    svc.get_resource("kbs:///default/key/1").unwrap();
    let err = svc.get_resource("kbs:///default/key/2").unwrap_err();
    let url = format!("{}/kbs/v0/resource/default/key/2", kbs.url);
    assert!(
        matches!(&err, Error::Denied { path, url: u, status: 401, .. }
            if path == "default/key/2" && u == &url),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "KBS resource default/key/2 denied by policy at {url} (401): \
             {ERR_PREFIX}PolicyDeny: Access denied by policy"
        )
    );
    assert_eq!((err.reason(), err.step()), ("denied", "resource"));
    assert_eq!(svc.handshakes(), 1);
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (1, 2));
    assert_eq!(svc.metrics().denials("default/key/2", "denied"), 1);
    assert_eq!(svc.metrics().releases("default/key/2"), 0);
}

#[test]
fn plugin_failure_and_404() {
    let kbs = Kbs::start();
    kbs.with(|s| {
        s.plugin_fail.push("default/key/1".into());
        s.http404.push("default/key/2".into());
    });
    let svc = service(&kbs);
    let err = svc.get_resource("kbs:///default/key/1").unwrap_err();
    assert!(
        matches!(&err, Error::ResourceBackend { detail, .. } if detail == "Plugin internal error"),
        "{err:?}"
    );
    assert_eq!(err.reason(), "kbs_backend");
    assert!(err.to_string().contains("PluginInternalError"), "{err}");
    let err = svc.get_resource("kbs:///default/key/2").unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { status: 404, kind, .. }
            if kind == &format!("{ERR_PREFIX}PluginNotFound")),
        "{err:?}"
    );
    assert_eq!(err.reason(), "not_found");
    // Neither retried nor re-attested.
    assert_eq!(kbs.with(|s| (s.auths, s.resource_gets)), (1, 2));
}

#[test]
fn transient_5xx_is_retried_then_succeeds() {
    let kbs = Kbs::start();
    kbs.with(|s| s.fail_next = 2);
    let svc = service(&kbs);
    assert_eq!(
        svc.get_resource("kbs:///default/key/1").unwrap().as_slice(),
        b"key one"
    );
    kbs.with(|s| s.fail_next = 1);
    svc.get_resource("kbs:///default/key/2").unwrap();
    assert_eq!(
        kbs.with(|s| s.log.clone()),
        [
            "POST /kbs/v0/auth",
            "POST /kbs/v0/auth",
            "POST /kbs/v0/auth",
            "POST /kbs/v0/attest",
            "GET /kbs/v0/resource/default/key/1",
            "GET /kbs/v0/resource/default/key/2",
            "GET /kbs/v0/resource/default/key/2",
        ]
    );
    assert_eq!((svc.metrics().attempts(), svc.handshakes()), (1, 1));
}

#[test]
fn too_many_5xx_give_the_last_answer() {
    let kbs = Kbs::start();
    kbs.with(|s| s.fail_next = 3);
    let svc = service(&kbs);
    let err = svc.attest().unwrap_err();
    assert!(
        matches!(&err, Error::Status { step: "auth", status: 503, attempts: 3, kind, detail, .. }
            if kind == "HTTP 503" && detail == "upstream busy"),
        "{err:?}"
    );
    assert_eq!(err.reason(), "http_5xx");
    assert_eq!(kbs.with(|s| s.log.len()), 3);
    assert_eq!(svc.metrics().failures("http_5xx"), 1);
    assert_eq!(svc.handshakes(), 0);
}

#[test]
fn four_xx_is_not_retried() {
    let kbs = Kbs::start_with_version("0.5.0");
    let svc = service(&kbs);
    let err = svc.attest().unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Status {
                step: "auth",
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(kbs.with(|s| s.log.len()), 1);
}

#[test]
fn dropped_connections_are_retried_up_to_max_attempts() {
    let (url, accepted) = common::slammer();
    let mut s = settings(&url);
    s.retry.max_attempts = 4;
    s.retry.initial_backoff = Duration::from_millis(20);
    s.retry.max_backoff = Duration::from_secs(1);
    let svc = KbsService::new(s, Attester::sample()).unwrap();
    let start = Instant::now();
    let err = svc.get_resource("kbs:///default/key/1").unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(&err, Error::Unreachable { step: "auth", attempts: 4, url: u, .. }
            if u == &format!("{url}/kbs/v0/auth")),
        "{err:?}"
    );
    assert_eq!(*accepted.lock().unwrap(), 4);
    // 20 + 40 + 80 ms of backoff.
    assert!(elapsed >= Duration::from_millis(140), "{elapsed:?}");
    let m = svc.metrics();
    assert_eq!(
        (m.attempts(), m.successes(), m.failures("unreachable")),
        (1, 0, 1)
    );
    assert_eq!(m.denials("default/key/1", "unreachable"), 1);
}

#[test]
fn slow_kbs_hits_the_deadline() {
    let kbs = Kbs::start();
    kbs.with(|s| s.auth_delay = Duration::from_secs(3));
    let mut s = settings(&kbs.url);
    s.retry.deadline = Duration::from_millis(400);
    let svc = KbsService::new(s, Attester::sample()).unwrap();
    let start = Instant::now();
    let err = svc.get_resource("kbs:///default/key/1").unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(&err, Error::Deadline { step: "auth", attempts: 1, deadline, url, .. }
            if *deadline == Duration::from_millis(400) && url == &format!("{}/kbs/v0/auth", kbs.url)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("no answer within the 400ms deadline"),
        "{err}"
    );
    assert_eq!((err.reason(), err.step()), ("deadline", "auth"));
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_millis(2000),
        "{elapsed:?}"
    );
    assert_eq!(svc.metrics().failures("deadline"), 1);
}

#[test]
fn backoff_longer_than_the_deadline_stops_early() {
    let url = format!("http://127.0.0.1:{}", common::closed_port());
    let mut s = KbsSettings::new(&url);
    s.retry = RetryPolicy {
        initial_backoff: Duration::from_secs(5),
        max_backoff: Duration::from_secs(5),
        max_attempts: 5,
        deadline: Duration::from_millis(300),
    };
    let svc = KbsService::new(s, Attester::sample()).unwrap();
    let start = Instant::now();
    let err = svc.attest().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    let Error::Deadline { attempts, last, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*attempts, 1);
    assert!(last.starts_with("cannot connect to the KBS at"), "{last}");
    assert_eq!(err.reason(), "deadline");
}

#[test]
fn init_data_from_settings_is_sent() {
    let kbs = Kbs::start();
    let mut s = settings(&kbs.url);
    s.init_data = Some("version = \"0.1.0\"\n".into());
    let svc = KbsService::new(s, Attester::sample()).unwrap();
    svc.attest().unwrap();
    assert_eq!(
        kbs.with(|s| s.last_init_data.clone()),
        json!({"format": "toml", "body": "version = \"0.1.0\"\n"})
    );
    assert_eq!(svc.token().unwrap().as_str(), "header.claims.signature");
    assert_eq!(svc.handshakes(), 1);
}

#[test]
fn metrics_render() {
    struct Broken;
    impl EvidenceProvider for Broken {
        fn tee(&self) -> Tee {
            Tee::Sample
        }
        fn evidence(&self, _report_data: &[u8]) -> Result<String, BoxError> {
            Err("no /dev/sev-guest".into())
        }
    }
    let kbs = Kbs::start();
    kbs.with(|s| s.deny.push("default/key/2".into()));
    let svc = service(&kbs);
    svc.get_resource("kbs:///default/key/1").unwrap();
    svc.get_resource("kbs:///default/key/1").unwrap();
    svc.get_resource("kbs:///default/key/missing").unwrap_err();
    svc.get_resource("kbs:///default/key/2").unwrap_err();
    svc.get_resource("kbs:///only/two").unwrap_err();
    let text = svc.metrics().render_prometheus();
    for line in [
        "# HELP coco_attestation_attempts_total KBS attestation handshakes started.",
        "# TYPE coco_attestation_attempts_total counter",
        "coco_attestation_attempts_total 1",
        "# TYPE coco_attestation_success_total counter",
        "coco_attestation_success_total 1",
        "# TYPE coco_attestation_failure_total counter",
        "# TYPE coco_attestation_duration_seconds histogram",
        "coco_attestation_duration_seconds_bucket{le=\"+Inf\"} 1",
        "coco_attestation_duration_seconds_count 1",
        "# TYPE coco_kbs_resource_releases_total counter",
        "coco_kbs_resource_releases_total{resource=\"default/key/1\"} 2",
        "# TYPE coco_kbs_resource_denials_total counter",
        "coco_kbs_resource_denials_total{resource=\"default/key/missing\",reason=\"not_found\"} 1",
        "coco_kbs_resource_denials_total{resource=\"default/key/2\",reason=\"denied\"} 1",
        "coco_kbs_resource_denials_total{resource=\"invalid\",reason=\"bad_uri\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
    assert!(!text.contains("coco_attestation_failure_total{"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("coco_kbs_resource_denials_total{"))
            .count(),
        3,
        "{text}"
    );

    let broken = KbsService::new(settings(&kbs.url), Broken).unwrap();
    let err = broken.attest().unwrap_err();
    assert_eq!(err.reason(), "evidence");
    let text = broken.metrics().render_prometheus();
    for line in [
        "coco_attestation_attempts_total 1",
        "coco_attestation_success_total 0",
        "coco_attestation_failure_total{reason=\"evidence\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
}
