//! protocol/fixtures/: the examples of every network message that pytest and vitest read too.
//! The daemon checks the handshake fully (`LocalInfo::parse`) and only the envelope of what it
//! relays (work and results: an object with a bounded `work_id`; verify and infer requests and
//! answers: a bounded JSON object); the rest is the nodes' to check. Here each fixture gets the
//! answer the daemon gives it on the wire, so the Rust side cannot drift from the others either.

use crate::util::{self, LocalInfo, MAX_WORK_ID_CHARS};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde_json::Value;
use std::path::PathBuf;

fn fixtures(message: &str) -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../protocol/fixtures").join(message);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.iter().any(|(n, _)| n.starts_with("valid-")), "{message}: no valid examples");
    assert!(out.iter().any(|(n, _)| n.starts_with("invalid-")), "{message}: no invalid examples");
    out
}

#[test]
fn handshakes_are_accepted_and_refused_as_the_fixtures_say() {
    for (name, v) in fixtures("handshake") {
        let parsed = LocalInfo::parse(&v, false);
        assert_eq!(parsed.is_ok(), name.starts_with("valid-"), "handshake/{name}: {parsed:?}");
    }
}

/// What the daemon relays of work and drafts: an object whose `work_id` is 1 to 128 characters.
fn envelope_ok(v: &Value) -> bool {
    v.get("work_id").and_then(Value::as_str).is_some_and(|w| !w.is_empty() && w.chars().count() <= MAX_WORK_ID_CHARS)
}

#[test]
fn work_and_drafts_pass_the_envelope_check_unless_it_is_broken() {
    for message in ["work", "draft", "verdict"] {
        for (name, v) in fixtures(message) {
            let relayed = util::validate_work_object(&v, message);
            if name.starts_with("valid-") {
                assert!(relayed.is_ok(), "{message}/{name}: {relayed:?}");
            } else {
                // invalid inside (a bad position, too many tokens): the node refuses it, the daemon carries it
                assert_eq!(relayed.is_ok(), envelope_ok(&v), "{message}/{name}: {relayed:?}");
            }
        }
    }
}

#[test]
fn requests_and_answers_are_relayed_as_bounded_objects() {
    for message in ["verdict", "infer_request", "draft"] {
        for (name, v) in fixtures(message) {
            let ok = util::validate_object(&v, message).is_ok();
            assert_eq!(ok, v.is_object(), "{message}/{name}");
            if name.starts_with("valid-") {
                assert!(ok, "{message}/{name}");
            }
        }
    }
}

#[test]
fn receipts_signed_by_python_verify_with_the_daemons_key_check() {
    for (name, v) in fixtures("receipt").into_iter().filter(|(n, _)| n.starts_with("valid-")) {
        // the canonical payload: sorted keys, no spaces (serde_json's map is sorted), as Python signs it
        let payload = serde_json::to_vec(&v["receipt"]).unwrap();
        let sig = B64.decode(v["signature_b64"].as_str().unwrap()).unwrap();
        let issuer: libp2p::PeerId = v["receipt"]["issuer"].as_str().unwrap().parse().unwrap();
        let key = util::public_key_from_peer_id(&issuer).expect("an ed25519 peer id");
        assert!(key.verify(&payload, &sig), "receipt/{name}: {}", String::from_utf8_lossy(&payload));
        let mut tampered = v["receipt"].clone();
        tampered["amount"] = Value::from(tampered["amount"].as_f64().unwrap() + 1.0);
        assert!(!key.verify(&serde_json::to_vec(&tampered).unwrap(), &sig), "receipt/{name}");
    }
}
