//! Integration tests: run several `shard-daemon` processes on 127.0.0.1 and drive them
//! through the control API.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789";
const BIN: &str = env!("CARGO_BIN_EXE_shard-daemon");

struct Daemon {
    child: Child,
    ready: Value,
    port: u16,
    peer_id: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base_args() -> Vec<String> {
    ["--control-port", "0", "--tcp-port", "0", "--listen-host", "127.0.0.1", "--no-mdns", "--log-level", "warn"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn spawn_cmd(extra: &[String], stdin: Stdio) -> Child {
    let mut args = base_args();
    args.extend(extra.iter().cloned());
    Command::new(BIN)
        .args(&args)
        .env("SHARD_CONTROL_TOKEN", TOKEN)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shard-daemon")
}

/// Reads stdout until the READY line; returns it parsed, or the stderr text on exit.
fn wait_ready(child: &mut Child) -> Result<Value, String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) => {
                    if let Some(j) = line.trim_end().strip_prefix("SHARD_SIDECAR_READY ") {
                        let _ = tx.send(Some(j.to_string()));
                        // keep draining so the child never blocks on a full pipe
                        let mut sink = vec![];
                        let _ = r.read_to_end(&mut sink);
                        return;
                    }
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(j)) => Ok(serde_json::from_str(&j).expect("READY json")),
        _ => {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            Err(err)
        }
    }
}

fn drain_stderr(child: &mut Child) {
    if let Some(mut e) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut sink = vec![];
            let _ = e.read_to_end(&mut sink);
        });
    }
}

fn start(extra: &[String]) -> Daemon {
    let mut child = spawn_cmd(extra, Stdio::null());
    let ready = wait_ready(&mut child).unwrap_or_else(|e| panic!("daemon did not start: {e}"));
    drain_stderr(&mut child);
    Daemon {
        child,
        port: ready["control_port"].as_u64().unwrap() as u16,
        peer_id: ready["peer_id"].as_str().unwrap().to_string(),
        ready,
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(20)).build()
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn req_tok(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, Value) {
        let mut r = agent().request(method, &self.url(path));
        if let Some(t) = token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => r.set("Content-Type", "application/json").send_string(b),
            None => r.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.req_tok("GET", path, None, Some(TOKEN))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req_tok("POST", path, Some(&body.to_string()), Some(TOKEN))
    }

    fn tcp_addr(&self) -> String {
        self.ready["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .find(|a| a.contains("/tcp/") && !a.contains("/ws"))
            .expect("a tcp listen addr")
    }

    fn peer_ids(&self) -> Vec<String> {
        let (s, v) = self.get("/peers");
        assert_eq!(s, 200, "{v}");
        v["peers"].as_array().unwrap().iter().map(|p| p["peer_id"].as_str().unwrap().to_string()).collect()
    }

    fn events(&self) -> Events {
        let resp = ureq::AgentBuilder::new()
            .build()
            .get(&self.url("/events"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .expect("events");
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        let (tx, rx) = mpsc::channel();
        let reader = resp.into_reader();
        std::thread::spawn(move || {
            let r = BufReader::new(reader);
            for line in r.lines() {
                let Ok(line) = line else { return };
                if let Some(d) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                    if let Ok(v) = serde_json::from_str::<Value>(d) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Events { rx }
    }
}

struct Events {
    rx: mpsc::Receiver<Value>,
}

impl Events {
    fn wait(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) if pred(&v) => return Some(v),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "shard-daemon-test-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Publishes fresh work from `from` until `events` sees it with the right `from`.
fn gossip_until_seen(from: &Daemon, events: &Events, tag: &str) -> Value {
    for i in 0..30 {
        let work_id = format!("{tag}-{i}");
        let (s, v) =
            from.post("/broadcast-work", json!({"work": {"work_id": work_id, "prompt": "hello", "position": 3}}));
        assert_eq!(s, 200, "{v}");
        if v["published"] == json!(true) {
            let wid = work_id.clone();
            if let Some(ev) =
                events.wait(Duration::from_millis(1500), |e| e["type"] == "work" && e["work"]["work_id"] == json!(wid))
            {
                return ev;
            }
        } else {
            assert_eq!(v["reason"], "no peers subscribed", "{v}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    panic!("gossiped work never arrived");
}

#[test]
fn mesh_gossip_results_handshake_verify_direct() {
    let a = start(&[]);
    let b = start(&["--bootstrap".into(), a.tcp_addr()]);
    let dir = tmpdir("bootfile");
    let bootfile = dir.join("peers.txt");
    std::fs::write(&bootfile, format!("# the first node\n\n{}  # inline comment\n", a.tcp_addr())).unwrap();
    let c = start(&["--bootstrap-file".into(), bootfile.display().to_string()]);
    assert!(
        wait_until(Duration::from_secs(15), || a.peer_ids().len() >= 2
            && b.peer_ids().contains(&a.peer_id)
            && c.peer_ids().contains(&a.peer_id)),
        "mesh did not form: a={:?}",
        a.peer_ids()
    );

    // handshake: B advertises roles, A sees them in /peers
    let (s, v) = b.req_tok(
        "PUT",
        "/local-info",
        Some(
            &json!({"roles": ["oracle", "scout"], "models": ["tiny"], "capacity": 4, "load": 1, "agent": "test-b"})
                .to_string(),
        ),
        Some(TOKEN),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, v) = a.get("/peers");
            v["peers"].as_array().unwrap().iter().any(|p| {
                p["peer_id"] == json!(b.peer_id)
                    && p["roles"] == json!(["oracle", "scout"])
                    && p["agent"] == "test-b"
                    && p["capacity"] == 4
                    && p["local"] == true
                    && !p["addrs"].as_array().unwrap().is_empty()
            })
        }),
        "handshake info not seen: {}",
        a.get("/peers").1
    );

    // gossip work from C reaches B with from = C
    let bev = b.events();
    let ev = gossip_until_seen(&c, &bev, "g");
    assert_eq!(ev["from"], json!(c.peer_id));
    assert_eq!(ev["via"], "gossip");
    let work_id = ev["work"]["work_id"].as_str().unwrap().to_string();

    // B publishes the result, C gets it from /events and /pop-result with from = B
    let cev = c.events();
    let mut got = vec![];
    for _ in 0..20 {
        let (s, v) =
            b.post("/publish-result", json!({"result": {"work_id": work_id, "tokens": [1, 2, 3], "from": "forged"}}));
        assert_eq!(s, 200, "{v}");
        if v["published"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let ev = cev
        .wait(Duration::from_secs(10), |e| e["type"] == "result" && e["work_id"] == json!(work_id))
        .expect("result event");
    assert_eq!(ev["from"], json!(b.peer_id));
    assert!(wait_until(Duration::from_secs(5), || {
        let (s, v) = c.get(&format!("/pop-result?work_id={work_id}"));
        assert_eq!(s, 200);
        got.extend(v["results"].as_array().unwrap().iter().cloned());
        !got.is_empty()
    }));
    assert_eq!(got[0]["from"], json!(b.peer_id));
    assert_eq!(got[0]["result"]["tokens"], json!([1, 2, 3]));
    assert_eq!(got[0]["work_id"], json!(work_id));
    let (_, v) = c.get(&format!("/pop-result?work_id={work_id}"));
    assert!(v["results"].as_array().unwrap().is_empty(), "popped twice: {v}");
    let (_, v) = c.get("/pop-result?work_id=other");
    assert!(v["results"].as_array().unwrap().is_empty());

    // direct work: A -> B only; C does not get it
    let (s, v) =
        a.post("/broadcast-work", json!({"work": {"work_id": "direct-1", "prompt": "secret"}, "peers": [b.peer_id]}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["published"], true, "{v}");
    assert_eq!(v["delivered_to"], json!([b.peer_id]));
    let ev = bev
        .wait(Duration::from_secs(5), |e| e["type"] == "work" && e["work"]["work_id"] == "direct-1")
        .expect("direct work on B");
    assert_eq!(ev["from"], json!(a.peer_id));
    assert_eq!(ev["via"], "direct");
    assert!(cev
        .wait(Duration::from_millis(1000), |e| e["type"] == "work" && e["work"]["work_id"] == "direct-1")
        .is_none());
    // a peer that is not connected is reported as failed
    let stranger = "12D3KooWGRUVh9ZKmLnPDrSNfrcXBfbkwAKfNkJtANxXM8x9oHk5";
    let (s, v) = a.post("/broadcast-work", json!({"work": {"work_id": "direct-2"}, "peers": [stranger]}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["published"], false);
    assert_eq!(v["failed"][0]["error"], "not connected");

    // verify round trip: A asks B, B's node answers through the control API
    let a_port = a.port;
    let b_id = b.peer_id.clone();
    let asker = std::thread::spawn(move || {
        let r = agent()
            .post(&format!("http://127.0.0.1:{a_port}/send-verify"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .send_json(json!({"peer_id": b_id, "request": {"work_id": "w9", "position": 7, "draft": [5, 6, 7]}}));
        match r {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_json::<Value>().unwrap()),
            Err(e) => panic!("{e}"),
        }
    });
    let ev = bev.wait(Duration::from_secs(10), |e| e["type"] == "verify_request").expect("verify_request event");
    assert_eq!(ev["from"], json!(a.peer_id));
    assert_eq!(ev["request"]["draft"], json!([5, 6, 7]));
    let rid = ev["request_id"].as_str().unwrap().to_string();
    let (s, v) = b.post("/verify-response", json!({"request_id": rid, "response": {"accepted": 2, "token": 9}}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = asker.join().unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["response"], json!({"accepted": 2, "token": 9}));
    // answering twice: unknown request id
    let (s, v) = b.post("/verify-response", json!({"request_id": rid, "response": {}}));
    assert_eq!(s, 404, "{v}");

    // topology and stats
    let (s, v) = a.get("/topology");
    assert_eq!(s, 200);
    let ws = v["ws_addrs"][0].as_str().unwrap();
    assert!(ws.starts_with("/ip4/127.0.0.1/tcp/") && ws.contains("/ws/p2p/"), "{ws}");
    assert!(v["quic_addrs"][0].as_str().unwrap().contains("/quic-v1/p2p/"));
    let (s, v) = b.get("/stats");
    assert_eq!(s, 200);
    assert!(v["work_received"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["dropped_invalid"], 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn auth_validation_and_signing() {
    let d = start(&[]);
    // health needs no token
    let (s, v) = d.req_tok("GET", "/health", None, None);
    assert_eq!(s, 200);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["peer_id"], json!(d.peer_id));
    assert_eq!(v["peers"], 0);
    // everything else does
    for (m, p) in
        [("GET", "/peers"), ("GET", "/topology"), ("GET", "/events"), ("POST", "/shutdown"), ("GET", "/stats")]
    {
        let (s, v) = d.req_tok(m, p, None, None);
        assert_eq!(s, 401, "{m} {p}: {v}");
        assert!(v["error"].as_str().unwrap().contains("token"));
        let (s, _) = d.req_tok(m, p, None, Some("wrong-token-0123456789"));
        assert_eq!(s, 401, "{m} {p} with a wrong token");
    }
    let bad: Vec<(&str, &str, &str)> = vec![
        ("POST", "/broadcast-work", "not json"),
        ("POST", "/broadcast-work", ""),
        ("POST", "/broadcast-work", "[1]"),
        ("POST", "/broadcast-work", r#"{"work": {"x": 1}}"#),
        ("POST", "/broadcast-work", r#"{"work": {"work_id": 7}}"#),
        ("POST", "/broadcast-work", r#"{"work": "s"}"#),
        ("POST", "/broadcast-work", r#"{"work": {"work_id": "a"}, "peers": "x"}"#),
        ("POST", "/broadcast-work", r#"{"work": {"work_id": "a"}, "peers": []}"#),
        ("POST", "/broadcast-work", r#"{"work": {"work_id": "a"}, "peers": ["nope"]}"#),
        ("POST", "/broadcast-work", r#"{"work": {"work_id": "a"}, "extra": 1}"#),
        ("POST", "/publish-result", r#"{"result": {"no_id": 1}}"#),
        ("POST", "/send-verify", r#"{"peer_id": "bad", "request": {}}"#),
        ("POST", "/send-verify", r#"{"request": {}}"#),
        ("POST", "/verify-response", r#"{"request_id": 5, "response": {}}"#),
        ("POST", "/verify-response", r#"{"request_id": "v1", "response": 5}"#),
        ("PUT", "/local-info", r#"{"roles": "oracle"}"#),
        ("PUT", "/local-info", r#"{"capacity": -3}"#),
        ("POST", "/sign", r#"{"payload_b64": "***"}"#),
        ("POST", "/verify-signature", r#"{"payload_b64": "", "signature_b64": ""}"#),
        ("GET", "/pop-result", ""),
    ];
    for (m, p, b) in bad {
        let body = if m == "GET" { None } else { Some(b) };
        let (s, v) = d.req_tok(m, p, body, Some(TOKEN));
        assert_eq!(s, 400, "{m} {p} {b:?}: {v}");
        assert!(v["error"].is_string(), "{m} {p} {b:?}: {v}");
    }
    let long = "x".repeat(129);
    let (s, _) = d.get(&format!("/pop-result?work_id={long}"));
    assert_eq!(s, 400);
    let (s, v) = d.post("/broadcast-work", json!({"work": {"work_id": long}}));
    assert_eq!(s, 400, "{v}");
    // oversize body
    let big = format!(r#"{{"work": {{"work_id": "a", "p": "{}"}}}}"#, "y".repeat(600 * 1024));
    // The daemon answers 413 as soon as the length is known and closes the connection: a client
    // still writing the body may see that as a broken pipe instead of the answer. Either way the
    // body is refused; what must never happen is a 2xx.
    let res = agent()
        .request("POST", &d.url("/broadcast-work"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json")
        .send_string(&big);
    match res {
        Err(ureq::Error::Status(s, _)) => assert_eq!(s, 413),
        Err(ureq::Error::Transport(t)) => {
            assert!(t.to_string().contains("Broken pipe") || t.to_string().contains("reset"), "{t}")
        }
        Ok(r) => panic!("an oversize body was accepted: {}", r.status()),
    }
    // over the 256 KiB message limit, under the body limit
    let mid = json!({"work": {"work_id": "a", "p": "y".repeat(300 * 1024)}});
    let (s, v) = d.post("/broadcast-work", mid);
    assert_eq!(s, 400, "{v}");
    // unknown path
    let (s, _) = d.get("/nope");
    assert_eq!(s, 404);
    // publishing with nobody subscribed is not an error
    let (s, v) = d.post("/broadcast-work", json!({"work": {"work_id": "lonely"}}));
    assert_eq!(s, 200);
    assert_eq!(v, json!({"published": false, "delivered_to": [], "reason": "no peers subscribed"}));
    // verify to an unreachable peer: a clear 502
    let (s, v) = d.post(
        "/send-verify",
        json!({"peer_id": "12D3KooWGRUVh9ZKmLnPDrSNfrcXBfbkwAKfNkJtANxXM8x9oHk5", "request": {"work_id": "w"}}),
    );
    assert_eq!(s, 502, "{v}");
    // sign and verify
    let (s, v) = d.post("/sign", json!({"payload_b64": "aGVsbG8="}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["peer_id"], json!(d.peer_id));
    let sig = v["signature_b64"].as_str().unwrap().to_string();
    let pk = v["public_key_b64"].as_str().unwrap().to_string();
    let (_, v) =
        d.post("/verify-signature", json!({"payload_b64": "aGVsbG8=", "signature_b64": sig, "public_key_b64": pk}));
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["peer_id"], json!(d.peer_id));
    let (_, v) =
        d.post("/verify-signature", json!({"payload_b64": "aGVsbG8=", "signature_b64": sig, "peer_id": d.peer_id}));
    assert_eq!(v["valid"], true, "{v}");
    let (_, v) =
        d.post("/verify-signature", json!({"payload_b64": "aGVsbG9v", "signature_b64": sig, "peer_id": d.peer_id}));
    assert_eq!(v["valid"], false, "{v}");
    let other = "12D3KooWGRUVh9ZKmLnPDrSNfrcXBfbkwAKfNkJtANxXM8x9oHk5";
    let (_, v) = d.post(
        "/verify-signature",
        json!({"payload_b64": "aGVsbG8=", "signature_b64": sig, "public_key_b64": pk, "peer_id": other}),
    );
    assert_eq!(v["valid"], false, "{v}");
    // local info round trip
    let (s, v) = d.req_tok("PUT", "/local-info", Some(r#"{"roles": ["scout"]}"#), Some(TOKEN));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["local_info"]["protocol_version"], 1);
}

#[test]
fn identity_survives_restart() {
    let dir = tmpdir("identity");
    let args = vec!["--data-dir".to_string(), dir.display().to_string()];
    let first = start(&args).peer_id.clone();
    let second = start(&args).peer_id.clone();
    assert_eq!(first, second);
    let key = dir.join("identity.key");
    assert!(key.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let other = start(&[]).peer_id.clone();
    assert_ne!(first, other);
    let _ = std::fs::remove_dir_all(dir);
}

fn port_of(d: &Daemon, k: &str) -> u16 {
    d.ready[k].as_u64().unwrap() as u16
}

#[test]
fn busy_ports_fall_back_unless_strict() {
    let a = start(&[]);
    let (tcp, ws, ctl) = (port_of(&a, "tcp_port"), port_of(&a, "ws_port"), a.port);
    assert!(port_of(&a, "quic_port") > 0);
    let b = start(&[
        "--tcp-port".into(),
        tcp.to_string(),
        "--ws-port".into(),
        ws.to_string(),
        "--control-port".into(),
        ctl.to_string(),
    ]);
    // QUIC follows the TCP port number when that UDP port is free
    assert_eq!(port_of(&b, "quic_port"), port_of(&b, "tcp_port"));
    assert_ne!(port_of(&b, "tcp_port"), tcp);
    assert_ne!(port_of(&b, "ws_port"), ws);
    assert_ne!(port_of(&b, "quic_port"), port_of(&a, "quic_port"));
    assert_ne!(b.port, ctl);
    assert_eq!(b.get("/health").0, 200);
    let mut child = spawn_cmd(&["--tcp-port".into(), tcp.to_string(), "--strict-ports".into()], Stdio::null());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("not available"), "{err}");
}

#[test]
fn refuses_to_start_without_token() {
    let out = Command::new(BIN).args(base_args()).env_remove("SHARD_CONTROL_TOKEN").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("control token"));
    // token from a file works
    let dir = tmpdir("tokenfile");
    let f = dir.join("token");
    std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
    let mut args = base_args();
    args.extend(["--control-token-file".to_string(), f.display().to_string()]);
    let mut child = Command::new(BIN)
        .args(&args)
        .env_remove("SHARD_CONTROL_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_ready(&mut child).unwrap();
    drain_stderr(&mut child);
    let d = Daemon {
        child,
        port: ready["control_port"].as_u64().unwrap() as u16,
        peer_id: ready["peer_id"].as_str().unwrap().to_string(),
        ready,
    };
    assert_eq!(d.get("/peers").0, 200);
    let _ = std::fs::remove_dir_all(dir);
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn clean_exit_on_stdin_close_and_shutdown() {
    let mut child = spawn_cmd(&["--exit-with-stdin".into()], Stdio::piped());
    wait_ready(&mut child).unwrap();
    drain_stderr(&mut child);
    drop(child.stdin.take());
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));

    let mut d = start(&[]);
    let (s, v) = d.post("/shutdown", json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(wait_exit(&mut d.child, Duration::from_secs(10)), Some(0));
}

#[test]
fn rate_limit_and_verify_timeout() {
    let a = start(&[]);
    let b = start(&[
        "--bootstrap".into(),
        a.tcp_addr(),
        "--peer-rate".into(),
        "0.1".into(),
        "--peer-burst".into(),
        "3".into(),
    ]);
    assert!(
        wait_until(Duration::from_secs(15), || b.peer_ids().contains(&a.peer_id) && a.peer_ids().contains(&b.peer_id))
    );
    // B takes 3 work items from A at once, then refuses and counts the rest
    let mut ok = 0;
    for i in 0..6 {
        let (s, v) =
            a.post("/broadcast-work", json!({"work": {"work_id": format!("flood-{i}")}, "peers": [b.peer_id]}));
        assert_eq!(s, 200, "{v}");
        if v["published"] == true {
            ok += 1;
        } else {
            assert_eq!(v["failed"][0]["error"], "rate limited", "{v}");
        }
    }
    assert_eq!(ok, 3);
    let (_, st) = b.get("/stats");
    assert_eq!(st["dropped_rate"], 3, "{st}");
    // an Oracle whose node never answers replies {"error": "timeout"} after 5 s
    let a_port = a.port;
    let bev = a.events();
    let b_id = b.peer_id.clone();
    let t0 = Instant::now();
    // (B is now rate limited for A's requests, so ask from B to A instead)
    let (s, v) = b.post("/send-verify", json!({"peer_id": a.peer_id, "request": {"work_id": "t"}}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["response"], json!({"error": "timeout"}));
    assert!(t0.elapsed() >= Duration::from_secs(4), "{:?}", t0.elapsed());
    let ev = bev.wait(Duration::from_secs(1), |e| e["type"] == "verify_request").expect("event");
    assert_eq!(ev["from"], json!(b_id));
    let (_, st) = agent()
        .get(&format!("http://127.0.0.1:{a_port}/stats"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .map(|r| (0, r.into_json::<Value>().unwrap()))
        .unwrap();
    assert_eq!(st["verify_timeouts"], 1, "{st}");
}

#[allow(dead_code)]
fn exists(p: &Path) -> bool {
    p.exists()
}

#[test]
fn peers_connect_over_websocket_and_quic() {
    let a = start(&[]);
    let (_, topo) = a.get("/topology");
    let ws = topo["ws_addrs"][0].as_str().unwrap().to_string();
    let quic = topo["quic_addrs"][0].as_str().unwrap().to_string();
    let b = start(&["--bootstrap".into(), ws]);
    let c = start(&["--bootstrap".into(), quic]);
    for (d, proto) in [(&b, "/ws"), (&c, "/quic-v1")] {
        assert!(
            wait_until(Duration::from_secs(15), || {
                let (_, v) = d.get("/peers");
                v["peers"].as_array().unwrap().iter().any(|p| {
                    p["peer_id"] == json!(a.peer_id)
                        && p["addrs"].as_array().unwrap().iter().any(|x| x.as_str().unwrap().contains(proto))
                })
            }),
            "no {proto} connection: {}",
            d.get("/peers").1
        );
    }
}

/// Issue 15: WebRTC-direct, for browsers that may not open ws://. The listener is announced in
/// `webrtc_addrs`; a daemon never dials such an address (each such dial left a webrtc-rs peer
/// connection running beside the TCP/QUIC one: ~5.5 MB and half the idle CPU per daemon), so a
/// second daemon given only it stays apart (browsers dial it: web-scout/test/interop.test.ts and
/// tests/test_nat_webrtc.py); the address keeps its certhash across a restart with the same data
/// dir, a busy port falls back, and `--no-webrtc` turns it off.
#[test]
fn peers_connect_over_webrtc_direct() {
    let dir = tmpdir("webrtc");
    let args = vec!["--data-dir".to_string(), dir.display().to_string()];
    let a = start(&args);
    let (_, topo) = a.get("/topology");
    let rtc = topo["webrtc_addrs"][0].as_str().unwrap().to_string();
    let port = port_of(&a, "webrtc_port");
    assert!(rtc.starts_with(&format!("/ip4/127.0.0.1/udp/{port}/webrtc-direct/certhash/")), "{rtc}");
    assert!(rtc.ends_with(&format!("/p2p/{}", a.peer_id)), "{rtc}");
    let b = start(&["--bootstrap".into(), rtc.clone()]);
    std::thread::sleep(Duration::from_secs(3));
    let (_, v) = b.get("/peers");
    assert!(
        v["peers"].as_array().unwrap().iter().all(|p| p["peer_id"] != json!(a.peer_id)),
        "a daemon dialed a WebRTC-direct address: {v}"
    );
    // a busy port is replaced by another (without --strict-ports)
    let busy = start(&["--webrtc-port".into(), port.to_string()]);
    assert!(port_of(&busy, "webrtc_port") > 0 && port_of(&busy, "webrtc_port") != port);
    // the same certificate after a restart: the same address
    let a_peer = a.peer_id.clone();
    drop(a);
    let again = start(&[args.clone(), vec!["--webrtc-port".into(), port.to_string()]].concat());
    assert_eq!(again.peer_id, a_peer);
    assert_eq!(again.get("/topology").1["webrtc_addrs"][0].as_str().unwrap(), rtc);
    let off = start(&["--no-webrtc".into()]);
    assert!(off.ready["webrtc_port"].is_null());
    assert!(!off.get("/topology").1["listen_addrs"].to_string().contains("webrtc"));
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// /shard/infer/1.0.0: streaming remote inference. A raw HTTP/1.1 client over TCP, so that both
// the request body (the Oracle node's answer) and the response body (the asker's lines) stream.

use std::io::Write;
use std::net::TcpStream;

/// Decodes a chunked HTTP body as it arrives.
struct Dechunk<R: BufRead> {
    r: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Dechunk<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            self.r.read_line(&mut size)?;
            let size = size.trim();
            if size.is_empty() {
                // the CRLF after the previous chunk
                let mut again = String::new();
                self.r.read_line(&mut again)?;
                return self.parse_size(again.trim(), out);
            }
            return self.parse_size(size, out);
        }
        self.read_data(out)
    }
}

impl<R: BufRead> Dechunk<R> {
    fn parse_size(&mut self, size: &str, out: &mut [u8]) -> std::io::Result<usize> {
        if size.is_empty() {
            self.done = true;
            return Ok(0);
        }
        let n = usize::from_str_radix(size.split(';').next().unwrap(), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
        if n == 0 {
            self.done = true;
            return Ok(0);
        }
        self.left = n;
        self.read_data(out)
    }

    fn read_data(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let k = out.len().min(self.left);
        let n = self.r.read(&mut out[..k])?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed mid-chunk"));
        }
        self.left -= n;
        Ok(n)
    }
}

struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body's lines as they arrive, each with the time it arrived.
    fn lines(self) -> mpsc::Receiver<(Instant, String)> {
        let chunked = self.header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r: Box<dyn BufRead + Send> = if chunked {
                Box::new(BufReader::new(Dechunk { r: self.reader, left: 0, done: false }))
            } else {
                Box::new(self.reader)
            };
            for line in r.lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn json(mut self) -> Value {
        if let Some(n) = self.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let mut body = vec![0u8; n];
            self.reader.read_exact(&mut body).expect("response body");
            let text = String::from_utf8_lossy(&body).to_string();
            return serde_json::from_str(&text).unwrap_or(Value::String(text));
        }
        let lines: Vec<String> = self.lines().iter().map(|(_, l)| l).collect();
        serde_json::from_str(&lines.join("\n")).unwrap_or(Value::String(lines.join("\n")))
    }
}

fn read_head(mut reader: BufReader<TcpStream>) -> std::io::Result<RawResponse> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = vec![];
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(RawResponse { status, headers, reader })
}

impl Daemon {
    /// Sends a request head (and a JSON body if given); returns the socket.
    fn raw_send(&self, path: &str, token: Option<&str>, body: Option<&Value>, chunked: bool) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(t) = token {
            head += &format!("Authorization: Bearer {t}\r\n");
        }
        let b = body.map(|b| b.to_string()).unwrap_or_default();
        if chunked {
            head += "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n";
        } else {
            head += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len());
        }
        s.write_all(head.as_bytes()).unwrap();
        s
    }

    /// `POST /infer`; returns the response head and a reader for the streamed lines.
    fn infer(&self, peer: &str, request: Value) -> (RawResponse, TcpStream) {
        let s = self.raw_send("/infer", Some(TOKEN), Some(&json!({"peer_id": peer, "request": request})), false);
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let r = read_head(BufReader::new(s.try_clone().unwrap())).expect("infer response head");
        (r, s)
    }
}

fn write_chunk(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    s.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    s.write_all(data)?;
    s.write_all(b"\r\n")?;
    s.flush()
}

fn end_chunks(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"0\r\n\r\n")?;
    s.flush()
}

fn meshed_pair() -> (Daemon, Daemon) {
    let a = start(&[]);
    let b = start(&["--bootstrap".into(), a.tcp_addr()]);
    assert!(
        wait_until(Duration::from_secs(15), || b.peer_ids().contains(&a.peer_id) && a.peer_ids().contains(&b.peer_id)),
        "the two daemons did not connect"
    );
    (a, b)
}

fn collect(rx: &mpsc::Receiver<(Instant, String)>, timeout: Duration) -> Vec<(Instant, Value)> {
    let end = Instant::now() + timeout;
    let mut out = vec![];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, l)) => out.push((t, serde_json::from_str(&l).unwrap_or_else(|_| panic!("not JSON: {l:?}")))),
            Err(mpsc::RecvTimeoutError::Disconnected) => return out,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the stream did not end; got {out:?}"),
        }
    }
}

#[test]
fn infer_streams_lines_as_they_are_produced() {
    let (a, b) = meshed_pair();
    let bev = b.events();
    let request = json!({"prompt": "hello", "max_tokens": 4, "model": "tiny"});
    let (resp, _sock) = a.infer(&b.peer_id, request.clone());
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/x-ndjson"));
    let lines = resp.lines();
    let ev = bev.wait(Duration::from_secs(10), |e| e["type"] == "infer_request").expect("infer_request event");
    assert_eq!(ev["from"], json!(a.peer_id));
    assert_eq!(ev["request"], request);
    assert!(ev["received_at_ms"].as_u64().unwrap() > 0);
    let id = ev["request_id"].as_str().unwrap().to_string();
    assert!(id.starts_with('i'), "{id}");

    // B's node answers in chunks with pauses; a line is split across two chunks and the last
    // one has no newline
    let mut s = b.raw_send(&format!("/infer-response?request_id={id}"), Some(TOKEN), None, true);
    write_chunk(&mut s, b"{\"type\":\"token\",\"text\":\"a\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    write_chunk(&mut s, b"{\"type\":\"tok").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    write_chunk(&mut s, b"en\",\"text\":\"b\"}\n\n{\"type\":\"token\",\"text\":\"c\"}\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    write_chunk(&mut s, b"{\"type\":\"done\"}").unwrap();
    let body_done = Instant::now();
    end_chunks(&mut s).unwrap();
    let r = read_head(BufReader::new(s)).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"ok": true, "lines": 4}));

    let got = collect(&lines, Duration::from_secs(10));
    let values: Vec<Value> = got.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        values,
        vec![
            json!({"type": "token", "text": "a"}),
            json!({"type": "token", "text": "b"}),
            json!({"type": "token", "text": "c"}),
            json!({"type": "done"}),
        ]
    );
    // real streaming: the first line reached A's client long before B's body ended
    assert!(got[0].0 + Duration::from_millis(1000) < body_done, "first line was not streamed");

    let (_, sa) = a.get("/stats");
    let (_, sb) = b.get("/stats");
    assert_eq!(sa["infer_outbound"], 1, "{sa}");
    assert_eq!(sb["infer_requests"], 1, "{sb}");
    assert_eq!(sb["infer_dropped"], 0, "{sb}");
    // the request id is spent
    let mut s = b.raw_send(&format!("/infer-response?request_id={id}"), Some(TOKEN), None, true);
    end_chunks(&mut s).unwrap();
    assert_eq!(read_head(BufReader::new(s)).unwrap().status, 404);
}

#[test]
fn infer_asker_disconnect_stops_the_oracle() {
    let (a, b) = meshed_pair();
    let bev = b.events();
    let (resp, sock) = a.infer(&b.peer_id, json!({"prompt": "long"}));
    assert_eq!(resp.status, 200);
    let lines = resp.lines();
    let ev = bev.wait(Duration::from_secs(10), |e| e["type"] == "infer_request").expect("infer_request event");
    let id = ev["request_id"].as_str().unwrap().to_string();
    let mut s = b.raw_send(&format!("/infer-response?request_id={id}"), Some(TOKEN), None, true);
    // B's answer arrives on another thread as soon as the daemon sends it
    let (htx, hrx) = mpsc::channel();
    let reader = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = htx.send(read_head(BufReader::new(reader)).map(|r| (r.status, r.json())).ok());
    });
    let mut disconnected_at = None;
    let mut outcome = None;
    for i in 0..200 {
        if write_chunk(&mut s, format!("{{\"type\":\"token\",\"i\":{i}}}\n").as_bytes()).is_err() {
            // the daemon answered and closed; its answer may still be readable
            let head = hrx.recv_timeout(Duration::from_secs(2)).ok().flatten();
            outcome = Some(format!("write failed; answer {head:?}"));
            break;
        }
        if i == 2 {
            // A's client saw the first lines, then goes away
            let first = lines.recv_timeout(Duration::from_secs(10)).expect("a line");
            assert!(first.1.contains("token"), "{first:?}");
            sock.shutdown(std::net::Shutdown::Both).unwrap();
            disconnected_at = Some(Instant::now());
        }
        if let Ok(head) = hrx.try_recv() {
            outcome = Some(format!("{head:?}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let disconnected_at = disconnected_at.expect("disconnected");
    let outcome = outcome.or_else(|| hrx.recv_timeout(Duration::from_secs(2)).ok().map(|h| format!("{h:?}")));
    let outcome = outcome.expect("B's /infer-response never ended");
    eprintln!("asker went away; /infer-response ended after {:?}: {outcome}", disconnected_at.elapsed());
    assert!(disconnected_at.elapsed() < Duration::from_secs(10), "took {:?}", disconnected_at.elapsed());
    assert!(
        outcome.contains("410") || outcome.starts_with("write failed"),
        "unexpected end of /infer-response: {outcome}"
    );
    assert!(wait_until(Duration::from_secs(5), || b.get("/stats").1["infer_asker_gone"] == 1), "{}", b.get("/stats").1);
}

#[test]
fn infer_errors_limits_and_auth() {
    let (a, b) = meshed_pair();
    let c = start(&[]); // connected to nobody
    let bev = b.events();

    // auth
    let s = a.raw_send("/infer", None, Some(&json!({"peer_id": b.peer_id, "request": {}})), false);
    assert_eq!(read_head(BufReader::new(s)).unwrap().status, 401);
    let s = b.raw_send("/infer-response?request_id=i1", Some("wrong"), None, false);
    assert_eq!(read_head(BufReader::new(s)).unwrap().status, 401);
    // validation
    for (body, want) in [
        (json!({"peer_id": b.peer_id, "request": {}, "extra": 1}), "unknown field"),
        (json!({"peer_id": b.peer_id, "request": [1]}), "request"),
        (json!({"peer_id": b.peer_id}), "`request` is required"),
        (json!({"peer_id": "nope", "request": {}}), "peer id"),
        (json!({"peer_id": a.peer_id, "request": {}}), "this node itself"),
        (json!({"peer_id": b.peer_id, "request": {"x": "y".repeat(300 * 1024)}}), "limit"),
    ] {
        let (st, v) = a.post("/infer", body);
        assert_eq!(st, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{v} lacks {want}");
    }
    // not connected
    let (st, v) = a.post("/infer", json!({"peer_id": c.peer_id, "request": {}}));
    assert_eq!(st, 502, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not connected"), "{v}");
    // /infer-response: unknown id, missing id, unknown parameter
    for (path, want) in
        [("/infer-response?request_id=i999", 404), ("/infer-response", 400), ("/infer-response?request_id=i1&x=1", 400)]
    {
        let mut s = b.raw_send(path, Some(TOKEN), None, true);
        end_chunks(&mut s).unwrap();
        let r = read_head(BufReader::new(s)).unwrap();
        assert_eq!(r.status, want, "{path}");
        assert!(r.json()["error"].is_string());
    }

    // the Oracle's node never answers: after 10 s the asker gets the error line
    let t0 = Instant::now();
    let (resp, _s1) = a.infer(&b.peer_id, json!({"n": 1}));
    assert_eq!(resp.status, 200);
    let silent = resp.lines();
    let ev1 = bev.wait(Duration::from_secs(10), |e| e["type"] == "infer_request").expect("event 1");
    // an oversize line from the Oracle's node: the node gets 413, the asker an error line
    let (resp, _s2) = a.infer(&b.peer_id, json!({"n": 2}));
    assert_eq!(resp.status, 200);
    let big = resp.lines();
    let ev2 = bev.wait(Duration::from_secs(10), |e| e["type"] == "infer_request").expect("event 2");
    assert_eq!(ev2["request"], json!({"n": 2}));
    let id2 = ev2["request_id"].as_str().unwrap();
    let mut s = b.raw_send(&format!("/infer-response?request_id={id2}"), Some(TOKEN), None, true);
    write_chunk(&mut s, b"{\"type\":\"token\",\"text\":\"ok\"}\n").unwrap();
    let huge = format!("{{\"type\":\"token\",\"text\":\"{}\"}}\n", "x".repeat(300 * 1024));
    let _ = write_chunk(&mut s, huge.as_bytes());
    let _ = end_chunks(&mut s);
    let r = read_head(BufReader::new(s)).unwrap();
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("longer than"));
    let got = collect(&big, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].1, json!({"type": "token", "text": "ok"}));
    assert_eq!(got[1].1["type"], "error");
    assert!(got[1].1["message"].as_str().unwrap().contains("longer than"), "{got:?}");

    let got = collect(&silent, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, json!({"type": "error", "message": "the oracle did not answer"}));
    let waited = got[0].0 - t0;
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(15), "{waited:?}");
    // answering too late: 404
    let id1 = ev1["request_id"].as_str().unwrap();
    let mut s = b.raw_send(&format!("/infer-response?request_id={id1}"), Some(TOKEN), None, true);
    end_chunks(&mut s).unwrap();
    assert_eq!(read_head(BufReader::new(s)).unwrap().status, 404);

    let (_, sb) = b.get("/stats");
    assert_eq!(sb["infer_requests"], 2, "{sb}");
    assert_eq!(sb["infer_unanswered"], 1, "{sb}");
    let (_, h) = b.get("/health");
    assert_eq!(h["pending_infer"], 0, "{h}");
}

// -- the internet mesh (issue 15): providers, remembered peers, target peer count ----------

fn set_oracle(d: &Daemon, models: &[&str]) {
    let body = json!({"roles": ["oracle"], "models": models}).to_string();
    let (s, v) = d.req_tok("PUT", "/local-info", Some(&body), Some(TOKEN));
    assert_eq!(s, 200, "{v}");
}

#[test]
fn providers_find_an_oracle_beyond_the_neighbours() {
    let hub = start(&[]);
    let oracle = start(&["--bootstrap".into(), hub.tcp_addr()]);
    set_oracle(&oracle, &["tiny-model"]);
    // (in a network this small Kademlia's own queries may connect the asker to the Oracle too;
    // what is checked is that the lookup names it and leaves a connection to it)
    let asker = start(&["--bootstrap".into(), hub.tcp_addr(), "--target-peers".into(), "1".into()]);
    assert!(wait_until(Duration::from_secs(20), || asker.peer_ids().contains(&hub.peer_id)));
    let (s, v) = oracle.get("/topology");
    assert_eq!(s, 200);
    assert_eq!(v["provided_models"], json!(["tiny-model"]), "{v}");
    let mut found = json!(null);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (s, v) = asker.post("/find-providers", json!({"model": "tiny-model"}));
            assert_eq!(s, 200, "{v}");
            found = v;
            found["connected"].as_array().unwrap().iter().any(|p| p == &json!(oracle.peer_id))
        }),
        "lookup never found the Oracle: {found}"
    );
    assert!(asker.peer_ids().contains(&oracle.peer_id));
    // no provider for another model; bad input is a 400
    let (s, v) = asker.post("/find-providers", json!({"model": "no-such-model"}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["providers"], json!([]));
    for bad in [
        json!({}),
        json!({"model": ""}),
        json!({"model": 3}),
        json!({"model": "a\nb"}),
        json!({"model": "x".repeat(200)}),
        json!({"model": "m", "extra": 1}),
    ] {
        let (s, v) = asker.post("/find-providers", bad);
        assert_eq!(s, 400, "{v}");
    }
}

#[test]
fn peers_are_remembered_across_restarts() {
    let hub = start(&[]);
    let dir = tmpdir("peerstore");
    let data = vec!["--data-dir".to_string(), dir.display().to_string()];
    let mut args = data.clone();
    args.extend(["--bootstrap".to_string(), hub.tcp_addr()]);
    let mut first = start(&args);
    assert!(wait_until(Duration::from_secs(20), || first.peer_ids().contains(&hub.peer_id)));
    let (s, _) = first.post("/shutdown", json!({}));
    assert_eq!(s, 200);
    assert_eq!(wait_exit(&mut first.child, Duration::from_secs(10)), Some(0));
    let file = dir.join("peers.json");
    let text = std::fs::read_to_string(&file).expect("peers.json written");
    assert!(text.contains(&hub.peer_id), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // no bootstrap this time: the remembered hub is dialed
    let second = start(&data);
    assert!(wait_until(Duration::from_secs(20), || second.peer_ids().contains(&hub.peer_id)));
    let (_, t) = second.get("/topology");
    assert!(t["remembered_peers"].as_u64().unwrap() >= 1, "{t}");
    // a corrupt file is ignored, not fatal
    std::fs::write(&file, b"{not json").unwrap();
    drop(second);
    let third = start(&data);
    assert_eq!(third.get("/health").0, 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bootstrap_accepts_dns_and_dnsaddr() {
    let hub = start(&[]);
    let port = port_of(&hub, "tcp_port");
    let dns = format!("/dns4/localhost/tcp/{port}/p2p/{}", hub.peer_id);
    // a /dnsaddr/ entry that does not resolve must not stop the daemon
    let d = start(&[
        "--bootstrap".into(),
        dns,
        "--bootstrap".into(),
        format!("/dnsaddr/bootstrap.invalid/p2p/{}", hub.peer_id),
    ]);
    assert!(wait_until(Duration::from_secs(20), || d.peer_ids().contains(&hub.peer_id)));
}

#[test]
fn connections_are_pruned_to_the_target() {
    let hub = start(&["--target-peers".into(), "4".into()]);
    let spokes: Vec<Daemon> =
        (0..8).map(|_| start(&["--bootstrap".into(), hub.tcp_addr(), "--target-peers".into(), "1".into()])).collect();
    assert!(wait_until(Duration::from_secs(20), || hub.peer_ids().len() >= 7), "spokes never connected");
    let (_, t) = hub.get("/topology");
    assert_eq!(t["target_peers"], 4);
    // after the grace period the hub closes the surplus down to its target
    assert!(
        wait_until(Duration::from_secs(40), || hub.peer_ids().len() <= 4),
        "hub still has {} peers",
        hub.peer_ids().len()
    );
    drop(spokes);
}
