//! Validation, bounded stores and rate limiting. Pure code, unit-tested.

use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest work / result / verify payload (serialized JSON), bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Longest `work_id`.
pub const MAX_WORK_ID_CHARS: usize = 128;
/// Results kept per work id (oldest dropped first).
pub const MAX_RESULTS_PER_WORK: usize = 256;
/// Results kept in total (oldest work ids dropped first).
pub const MAX_RESULTS_TOTAL: usize = 10_000;
/// Results older than this are dropped (a draft is useful for about 2 s: its work's deadline).
pub const RESULT_TTL: Duration = Duration::from_secs(60);
/// Largest result (a scout's draft: at most 512 characters of text or 16 token ids) taken from gossip.
pub const MAX_RESULT_MESSAGE_BYTES: usize = 16 * 1024;
/// Bytes of results kept in total (oldest work ids dropped first): gossip from any peer lands
/// here and nothing may make it grow with what peers send (1,000 results of 255 kB were 300 MB).
pub const MAX_RESULT_BYTES: usize = 8 * 1024 * 1024;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// Checks a work or result object: a JSON object with a non-empty string `work_id`
/// of at most 128 characters, serialized size at most 256 KiB.
pub fn validate_work_object(v: &Value, what: &str) -> Result<String, String> {
    let obj = v.as_object().ok_or_else(|| format!("`{what}` must be a JSON object"))?;
    let id = match obj.get("work_id") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(format!("`{what}.work_id` must be a string")),
        None => return Err(format!("`{what}.work_id` is required")),
    };
    if id.is_empty() {
        return Err(format!("`{what}.work_id` must not be empty"));
    }
    if id.chars().count() > MAX_WORK_ID_CHARS {
        return Err(format!("`{what}.work_id` is longer than {MAX_WORK_ID_CHARS} characters"));
    }
    check_size(v, what)?;
    Ok(id.clone())
}

/// Checks that a value is a JSON object of at most 256 KiB serialized.
pub fn validate_object(v: &Value, what: &str) -> Result<(), String> {
    if !v.is_object() {
        return Err(format!("`{what}` must be a JSON object"));
    }
    check_size(v, what)
}

fn check_size(v: &Value, what: &str) -> Result<(), String> {
    let n = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if n > MAX_MESSAGE_BYTES {
        return Err(format!("`{what}` is {n} bytes serialized, more than the limit of {MAX_MESSAGE_BYTES}"));
    }
    Ok(())
}

/// What a node advertises in the handshake.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LocalInfo {
    pub protocol_version: u64,
    pub roles: Vec<String>,
    pub models: Vec<String>,
    pub capacity: u64,
    pub load: u64,
    pub agent: String,
    /// The small model an Oracle's scouts draft with (fetched over `/shard/infer/1.0.0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft_model: Option<DraftModel>,
    /// On the wire, from a scout: its pairing proof for the peer it sends this to
    /// (hex HMAC-SHA256 of "<scout id>/<that peer's id>" under the node's pairing key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    /// From the API only, never sent: the pairing key the proofs are made with.
    #[serde(skip)]
    pub pair_key: Option<String>,
}

/// A draft model as the handshake names it: file name, size, sha256 and the tokenizer's
/// fingerprint (docs/protocol.md, "Draft models").
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DraftModel {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub vocab: String,
}

fn hex_field(obj: &Map<String, Value>, key: &str, max_len: usize) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(s.clone())
        }
        _ => Err(format!("`draft_model.{key}` must be 1 to {max_len} hex digits")),
    }
}

impl DraftModel {
    fn parse(v: Option<&Value>) -> Result<Option<DraftModel>, String> {
        let obj = match v {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(o)) => o,
            Some(_) => return Err("`draft_model` must be an object".into()),
        };
        let name = match obj.get("name") {
            Some(Value::String(s))
                if !s.is_empty()
                    && s.chars().count() <= MAX_NAME_CHARS
                    && !s.contains(['/', '\\'])
                    && s != ".."
                    && s != "." =>
            {
                s.clone()
            }
            _ => return Err("`draft_model.name` must be a file name".into()),
        };
        let size =
            obj.get("size").and_then(Value::as_u64).ok_or("`draft_model.size` must be a non-negative integer")?;
        let sha256 = hex_field(obj, "sha256", 64)?;
        if sha256.len() != 64 {
            return Err("`draft_model.sha256` must be 64 hex digits".into());
        }
        let vocab = hex_field(obj, "vocab", 64)?;
        Ok(Some(DraftModel { name, size, sha256, vocab }))
    }
}

pub const PROTOCOL_VERSION: u64 = 1;
const MAX_ROLES: usize = 16;
const MAX_MODELS: usize = 64;
const MAX_NAME_CHARS: usize = 256;

impl LocalInfo {
    pub fn default_for(version: &str) -> Self {
        LocalInfo {
            protocol_version: PROTOCOL_VERSION,
            roles: vec![],
            models: vec![],
            capacity: 0,
            load: 0,
            agent: format!("shard-daemon/{version}"),
            draft_model: None,
            pair: None,
            pair_key: None,
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Parses handshake info. `from_api`: the `PUT /local-info` body, where
    /// `protocol_version` is optional (the daemon sets it); on the wire it is required.
    pub fn parse(v: &Value, from_api: bool) -> Result<LocalInfo, String> {
        let obj: &Map<String, Value> = v.as_object().ok_or("body must be a JSON object")?;
        let protocol_version = match obj.get("protocol_version") {
            None if from_api => PROTOCOL_VERSION,
            None => return Err("`protocol_version` is required".into()),
            Some(x) => x.as_u64().ok_or("`protocol_version` must be a non-negative integer")?,
        };
        let roles = string_list(obj, "roles", MAX_ROLES, 64)?;
        let models = string_list(obj, "models", MAX_MODELS, MAX_NAME_CHARS)?;
        let capacity = uint(obj, "capacity")?;
        let load = uint(obj, "load")?;
        let agent = match obj.get("agent") {
            None => String::new(),
            Some(Value::String(s)) if s.chars().count() <= MAX_NAME_CHARS => s.clone(),
            Some(Value::String(_)) => return Err(format!("`agent` is longer than {MAX_NAME_CHARS} characters")),
            Some(_) => return Err("`agent` must be a string".into()),
        };
        let draft_model = DraftModel::parse(obj.get("draft_model"))?;
        let text = |key: &str, max: usize| -> Result<Option<String>, String> {
            match obj.get(key) {
                None => Ok(None),
                Some(Value::String(s))
                    if !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_hexdigit()) =>
                {
                    Ok(Some(s.clone()))
                }
                Some(_) => Err(format!("`{key}` must be 1 to {max} hex digits")),
            }
        };
        let (pair, pair_key) = if from_api { (None, text("pair_key", 256)?) } else { (text("pair", 64)?, None) };
        Ok(LocalInfo { protocol_version, roles, models, capacity, load, agent, draft_model, pair, pair_key })
    }
}

fn string_list(obj: &Map<String, Value>, key: &str, max_items: usize, max_chars: usize) -> Result<Vec<String>, String> {
    match obj.get(key) {
        None => Ok(vec![]),
        Some(Value::Array(items)) => {
            if items.len() > max_items {
                return Err(format!("`{key}` has more than {max_items} items"));
            }
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) if !s.is_empty() && s.chars().count() <= max_chars => Ok(s.clone()),
                    Value::String(_) => Err(format!("`{key}` items must be 1 to {max_chars} characters long")),
                    _ => Err(format!("`{key}` must be a list of strings")),
                })
                .collect()
        }
        Some(_) => Err(format!("`{key}` must be a list of strings")),
    }
}

fn uint(obj: &Map<String, Value>, key: &str) -> Result<u64, String> {
    match obj.get(key) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= u32::MAX as u64)
            .ok_or_else(|| format!("`{key}` must be an integer from 0 to {}", u32::MAX)),
    }
}

/// A scout's pairing proof for `to`: hex HMAC-SHA256 of "<from>/<to>" under `key`, so a proof
/// made for one Oracle says nothing to another and cannot be shown by another identity.
pub fn pair_proof(key: &str, from: &libp2p::PeerId, to: &libp2p::PeerId) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{from}/{to}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A token bucket per peer: `rate` tokens per second, at most `burst`.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_peers: usize,
    buckets: HashMap<libp2p::PeerId, (f64, Instant)>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64, max_peers: usize) -> Self {
        RateLimiter { rate, burst, max_peers, buckets: HashMap::new() }
    }

    /// Takes one token for `peer`; false when the peer is over its rate.
    pub fn allow(&mut self, peer: &libp2p::PeerId, now: Instant) -> bool {
        self.allow_cost(peer, 1.0, now)
    }

    /// Takes `cost` tokens for `peer` (bytes, for a byte budget); false when it has not that many.
    pub fn allow_cost(&mut self, peer: &libp2p::PeerId, cost: f64, now: Instant) -> bool {
        if !self.buckets.contains_key(peer) && self.buckets.len() >= self.max_peers {
            self.prune(now);
            if self.buckets.len() >= self.max_peers {
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let entry = self.buckets.entry(*peer).or_insert((burst, now));
        let elapsed = now.saturating_duration_since(entry.1).as_secs_f64();
        entry.0 = (entry.0 + elapsed * rate).min(burst);
        entry.1 = now;
        if entry.0 >= cost.max(1.0).min(burst) {
            entry.0 -= cost.max(1.0).min(burst);
            true
        } else {
            false
        }
    }

    /// Forgets buckets that are full again (idle peers).
    pub fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, (tokens, at)| *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst);
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredResult {
    pub work_id: String,
    pub from: String,
    pub received_at_ms: u64,
    pub result: Value,
    #[serde(skip)]
    pub at: Option<Instant>,
    /// Its size as JSON (set by the store).
    #[serde(skip)]
    pub bytes: usize,
}

/// Results by work id, bounded per work id and in total, with a time to live.
#[derive(Default)]
pub struct ResultStore {
    by_work: HashMap<String, VecDeque<StoredResult>>,
    order: VecDeque<String>,
    total: usize,
    bytes: usize,
}

impl ResultStore {
    pub fn push(&mut self, mut r: StoredResult) {
        r.bytes = r.result.to_string().len();
        self.bytes += r.bytes;
        let q = self.by_work.entry(r.work_id.clone()).or_insert_with(|| {
            self.order.push_back(r.work_id.clone());
            VecDeque::new()
        });
        q.push_back(r);
        self.total += 1;
        if q.len() > MAX_RESULTS_PER_WORK {
            if let Some(old) = q.pop_front() {
                self.bytes -= old.bytes;
            }
            self.total -= 1;
        }
        while self.total > MAX_RESULTS_TOTAL || self.bytes > MAX_RESULT_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(q) = self.by_work.remove(&oldest) {
                self.total -= q.len();
                self.bytes -= q.iter().map(|r| r.bytes).sum::<usize>();
            }
        }
    }

    pub fn pop(&mut self, work_id: &str) -> Vec<StoredResult> {
        match self.by_work.remove(work_id) {
            Some(q) => {
                self.total -= q.len();
                self.bytes -= q.iter().map(|r| r.bytes).sum::<usize>();
                self.order.retain(|w| w != work_id);
                q.into_iter().collect()
            }
            None => vec![],
        }
    }

    pub fn expire(&mut self, now: Instant) {
        let mut emptied = vec![];
        for (w, q) in self.by_work.iter_mut() {
            let before = q.len();
            let mut freed = 0;
            q.retain(|r| {
                let keep = r.at.is_none_or(|t| now.saturating_duration_since(t) < RESULT_TTL);
                if !keep {
                    freed += r.bytes;
                }
                keep
            });
            self.total -= before - q.len();
            self.bytes -= freed;
            if q.is_empty() {
                emptied.push(w.clone());
            }
        }
        for w in emptied {
            self.by_work.remove(&w);
            self.order.retain(|x| x != &w);
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Constant-time comparison of the presented token with the expected one.
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if presented.len() != expected.len() {
        return false;
    }
    presented.ct_eq(expected).into()
}

/// Extracts the public key embedded in an identity-multihash peer id (ed25519 keys).
pub fn public_key_from_peer_id(peer: &libp2p::PeerId) -> Option<libp2p::identity::PublicKey> {
    let bytes = peer.to_bytes();
    // identity multihash: code 0x00, then a one-byte varint length (< 128), then the key
    if bytes.len() >= 2 && bytes[0] == 0x00 && (bytes[1] as usize) < 0x80 {
        let len = bytes[1] as usize;
        if bytes.len() == 2 + len {
            return libp2p::identity::PublicKey::try_decode_protobuf(&bytes[2..]).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn work_object_validation() {
        assert_eq!(validate_work_object(&json!({"work_id": "w1", "x": 1}), "work").unwrap(), "w1");
        assert!(validate_work_object(&json!([1]), "work").is_err());
        assert!(validate_work_object(&json!({"x": 1}), "work").is_err());
        assert!(validate_work_object(&json!({"work_id": 5}), "work").is_err());
        assert!(validate_work_object(&json!({"work_id": ""}), "work").is_err());
        let long = "x".repeat(129);
        assert!(validate_work_object(&json!({"work_id": long}), "work").is_err());
        let ok = "é".repeat(128);
        assert!(validate_work_object(&json!({"work_id": ok}), "work").is_ok());
        let big = "y".repeat(MAX_MESSAGE_BYTES);
        let e = validate_work_object(&json!({"work_id": "a", "p": big}), "work").unwrap_err();
        assert!(e.contains("limit"), "{e}");
    }

    #[test]
    fn local_info_parse() {
        let i = LocalInfo::parse(
            &json!({"roles": ["oracle"], "models": ["m"], "capacity": 4, "load": 1, "agent": "a"}),
            true,
        )
        .unwrap();
        assert_eq!(i.protocol_version, 1);
        assert_eq!(i.roles, vec!["oracle"]);
        assert!(LocalInfo::parse(&json!({"roles": "oracle"}), true).is_err());
        assert!(LocalInfo::parse(&json!({"roles": [1]}), true).is_err());
        assert!(LocalInfo::parse(&json!({"capacity": -1}), true).is_err());
        assert!(LocalInfo::parse(&json!({"capacity": 1.5}), true).is_err());
        assert!(LocalInfo::parse(&json!({"agent": 3}), true).is_err());
        assert!(LocalInfo::parse(&json!({}), false).is_err());
        assert!(LocalInfo::parse(&json!({"protocol_version": 1}), false).is_ok());
        let roles: Vec<String> = (0..17).map(|i| format!("r{i}")).collect();
        assert!(LocalInfo::parse(&json!({ "roles": roles }), true).is_err());
        assert!(LocalInfo::parse(&json!({"protocol_version": 1, "pair": "zz"}), false).is_err());
        let k = LocalInfo::parse(&json!({"pair_key": "ab12"}), true).unwrap();
        assert_eq!(k.pair_key.as_deref(), Some("ab12"));
        assert!(k.to_value().get("pair_key").is_none()); // never sent
                                                         // round trip through the wire shape
        let v = i.to_value();
        assert_eq!(LocalInfo::parse(&v, false).unwrap(), i);
        let sha = "ab".repeat(32);
        let d = json!({"draft_model": {"name": "small.gguf", "size": 5, "sha256": sha, "vocab": "0123abcd"}});
        let with_draft = LocalInfo::parse(&d, true).unwrap();
        assert_eq!(with_draft.draft_model.as_ref().unwrap().name, "small.gguf");
        assert_eq!(LocalInfo::parse(&with_draft.to_value(), false).unwrap(), with_draft);
        for bad in [
            json!({"name": "../x.gguf", "size": 5, "sha256": sha, "vocab": "ab"}),
            json!({"name": "x.gguf", "size": -5, "sha256": sha, "vocab": "ab"}),
            json!({"name": "x.gguf", "size": 5, "sha256": "zz", "vocab": "ab"}),
            json!({"name": "x.gguf", "size": 5, "sha256": sha, "vocab": "not hex"}),
            json!("x.gguf"),
        ] {
            assert!(LocalInfo::parse(&json!({ "draft_model": bad }), true).is_err());
        }
    }

    #[test]
    fn rate_limiter_bucket() {
        let mut rl = RateLimiter::new(10.0, 5.0, 2);
        let p = libp2p::PeerId::random();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(rl.allow(&p, t0));
        }
        assert!(!rl.allow(&p, t0));
        assert!(rl.allow(&p, t0 + Duration::from_millis(150)));
        // bounded number of tracked peers
        let q = libp2p::PeerId::random();
        let r = libp2p::PeerId::random();
        assert!(rl.allow(&q, t0));
        assert!(!rl.allow(&r, t0));
        rl.prune(t0 + Duration::from_secs(10));
        assert_eq!(rl.len(), 0);
    }

    fn res(w: &str, i: u64) -> StoredResult {
        StoredResult {
            work_id: w.into(),
            from: "p".into(),
            received_at_ms: i,
            result: json!({"work_id": w, "i": i}),
            at: Some(Instant::now()),
            bytes: 0,
        }
    }

    #[test]
    fn result_store_bounds() {
        let mut s = ResultStore::default();
        for i in 0..(MAX_RESULTS_PER_WORK as u64 + 10) {
            s.push(res("a", i));
        }
        s.push(res("b", 0));
        assert_eq!(s.total(), MAX_RESULTS_PER_WORK + 1);
        let a = s.pop("a");
        assert_eq!(a.len(), MAX_RESULTS_PER_WORK);
        assert_eq!(a[0].received_at_ms, 10);
        assert!(s.pop("a").is_empty());
        assert_eq!(s.pop("b").len(), 1);
        assert_eq!(s.total(), 0);
        for i in 0..(MAX_RESULTS_TOTAL as u64 + 5) {
            s.push(res(&format!("w{i}"), i));
        }
        assert_eq!(s.total(), MAX_RESULTS_TOTAL);
        assert!(s.pop("w0").is_empty());
        assert_eq!(s.pop(&format!("w{}", MAX_RESULTS_TOTAL + 4)).len(), 1);
        s.expire(Instant::now() + RESULT_TTL + Duration::from_secs(1));
        assert_eq!(s.total(), 0);
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn result_store_is_bounded_in_bytes() {
        let mut s = ResultStore::default();
        for i in 0..1000u64 {
            let mut r = res(&format!("w{i}"), i);
            r.result = serde_json::json!({"work_id": format!("w{i}"), "text": "x".repeat(255 * 1024)});
            s.push(r);
        }
        assert!(s.bytes() <= MAX_RESULT_BYTES, "{} bytes kept", s.bytes());
        assert!(s.total() >= 30 && s.total() < 40);
        assert_eq!(s.pop("w999").len(), 1);
    }

    #[test]
    fn token_compare() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
        assert!(!token_matches(b"", b"abc"));
    }

    #[test]
    fn peer_id_key_extraction() {
        let kp = libp2p::identity::Keypair::generate_ed25519();
        let pid = kp.public().to_peer_id();
        assert_eq!(public_key_from_peer_id(&pid), Some(kp.public()));
    }
}
