#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The service's audit records (`tracing` target `audit`): one per attestation and one per
//! resource release or denial, and never a secret, token, cookie or key in any event.
//! Alone in its test binary: it installs a thread-local subscriber.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_attester::Attester;
use cocoon_guest_components::{KbsService, KbsSettings, RetryPolicy};
use common::Kbs;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

#[derive(Debug, Clone)]
struct Record {
    target: String,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Record>>>);

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Record {
            target: event.metadata().target().to_owned(),
            fields: fields.0,
        });
    }
}

#[test]
fn audit_records_and_no_secrets() {
    let kbs = Kbs::start();
    kbs.with(|s| {
        s.token_ttl = Some(600);
        s.deny.push("default/key/2".into());
    });
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let svc = tracing::subscriber::with_default(subscriber, || {
        let mut settings = KbsSettings::new(&kbs.url);
        settings.retry.initial_backoff = Duration::from_millis(10);
        let svc = KbsService::new(settings, Attester::sample()).unwrap();
        assert_eq!(
            svc.get_resource("kbs:///default/key/1").unwrap().as_slice(),
            b"key one"
        );
        svc.get_resource("kbs:///default/key/missing").unwrap_err();
        svc.get_resource("kbs:///default/key/2").unwrap_err();
        // The KBS forgets the session: a second attestation, audited too.
        kbs.with(|s| s.expire_sessions = true);
        svc.get_resource("kbs:///default/key/1").unwrap();

        let mut down = KbsSettings::new(format!("http://127.0.0.1:{}", common::closed_port()));
        down.retry = RetryPolicy::no_retries();
        let down = KbsService::new(down, Attester::sample()).unwrap();
        down.attest().unwrap_err();
        svc
    });
    let records = capture.0.lock().unwrap().clone();
    let audit: Vec<&BTreeMap<String, String>> = records
        .iter()
        .filter(|r| r.target == "audit")
        .map(|r| &r.fields)
        .collect();
    let get = |f: &BTreeMap<String, String>, k: &str| f.get(k).cloned().unwrap_or_default();
    let summary: Vec<String> = audit
        .iter()
        .map(|f| {
            format!(
                "{} {} {}{}",
                get(f, "event"),
                get(f, "outcome"),
                get(f, "resource"),
                match get(f, "event").as_str() {
                    "attestation" => format!(
                        "handshakes={} reason={}",
                        get(f, "handshakes"),
                        get(f, "reason")
                    ),
                    _ => format!(" reason={}", get(f, "reason")),
                }
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "attestation success handshakes=1 reason=",
            "resource released default/key/1 reason=",
            "resource denied default/key/missing reason=not_found",
            "resource denied default/key/2 reason=denied",
            "attestation success handshakes=2 reason=",
            "resource released default/key/1 reason=",
            "attestation failure handshakes=0 reason=unreachable",
        ]
    );
    for f in &audit {
        if get(f, "event") == "attestation" {
            assert!(get(f, "duration_ms").parse::<u64>().is_ok(), "{f:?}");
            assert!(!get(f, "kbs").is_empty(), "{f:?}");
        }
    }
    assert_eq!(svc.handshakes(), 2);

    // No token, cookie, key or secret value anywhere, in any event.
    let (tokens, cookies) = kbs.with(|s| {
        (
            s.tokens.clone(),
            s.resource_cookies.iter().cloned().collect::<Vec<_>>(),
        )
    });
    assert_eq!((tokens.len(), cookies.len()), (2, 2));
    let jwk = serde_json::to_value(svc.tee_pubkey().unwrap()).unwrap();
    let mut forbidden: Vec<String> = tokens;
    forbidden.extend(cookies);
    forbidden.push("token-secret".into());
    forbidden.push("00000000-0000-4000-8000".into());
    forbidden.push("key one".into());
    forbidden.push("key two".into());
    forbidden.push(jwk["x"].as_str().unwrap().to_owned());
    forbidden.push(jwk["y"].as_str().unwrap().to_owned());
    for r in &records {
        for (k, v) in &r.fields {
            for secret in &forbidden {
                assert!(!v.contains(secret.as_str()), "{k}={v} leaks {secret}");
            }
        }
    }
}
