//! Kademlia provider records per model id: an Oracle provides the key of each model it serves,
//! so a node without the model finds Oracles for it beyond its gossip neighbours
//! (`POST /find-providers`), dials them, and can then ask them for inference.

use crate::api::{call, parse_body, ApiError, AppState};
use crate::net::Command;
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::StatusCode,
    Json,
};
use libp2p::{kad, PeerId};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long `POST /find-providers` waits for the lookup.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Then how long it waits for connections to the providers found.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_MODEL_CHARS: usize = 128;

/// `POST /find-providers {"model"}`: the Oracles that provide `model` in the DHT, and which of
/// them this node is now connected to (the lookup dials them).
pub async fn find_providers(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let m = parse_body(body, &["model"])?;
    let model = match m.get("model") {
        Some(Value::String(s))
            if !s.is_empty() && s.chars().count() <= MAX_MODEL_CHARS && !s.chars().any(char::is_control) =>
        {
            s.clone()
        }
        Some(_) => {
            return Err(ApiError::bad(format!(
                "`model` must be a string of 1 to {MAX_MODEL_CHARS} printable characters"
            )))
        }
        None => return Err(ApiError::bad("`model` is required")),
    };
    // not `call`: the answer comes when the lookup does, past call's 5 s
    let (tx, rx) = oneshot::channel();
    st.commands
        .send(Command::FindProviders(model.clone(), tx))
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "network event loop stopped".into()))?;
    let found = match tokio::time::timeout(LOOKUP_TIMEOUT, rx).await {
        Err(_) => vec![],
        Ok(Err(_)) => return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "lookup dropped".into())),
        Ok(Ok(Err(e))) => return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e)),
        Ok(Ok(Ok(v))) => v,
    };
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut connected = vec![];
    loop {
        connected.clear();
        for p in &found {
            if call(&st, |r| Command::IsConnected(*p, r)).await? {
                connected.push(p.to_string());
            }
        }
        if connected.len() == found.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Json(json!({
        "model": model,
        "providers": found.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "connected": connected,
    })))
}

/// Most providers collected for one lookup.
pub const MAX_FOUND: usize = 20;
/// Most lookups in flight at once (more are refused).
pub const MAX_LOOKUPS: usize = 64;
/// Most model keys this node provides.
pub const MAX_PROVIDED: usize = 64;

/// The DHT key for the Oracles of `model`.
pub fn key(model: &str) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/shard/model/{model}"))
}

pub type FoundReply = oneshot::Sender<Result<Vec<PeerId>, String>>;

#[derive(Default)]
pub struct Providers {
    /// models this node announces
    provided: HashSet<String>,
    lookups: HashMap<kad::QueryId, (FoundReply, HashSet<PeerId>)>,
    /// whether this node had peers at the last check
    had_peers: bool,
}

impl Providers {
    /// Starts and stops providing so the DHT holds exactly `models` for this node.
    pub fn set_models(&mut self, kad: &mut kad::Behaviour<kad::store::MemoryStore>, models: &[String]) {
        let want: HashSet<String> = models.iter().take(MAX_PROVIDED).cloned().collect();
        for gone in self.provided.difference(&want) {
            kad.stop_providing(&key(gone));
        }
        for m in want.difference(&self.provided) {
            if let Err(e) = kad.start_providing(key(m)) {
                tracing::warn!("cannot provide model {m}: {e}");
            }
        }
        self.provided = want;
    }

    /// Re-announces every provided model when this node (re)joins the mesh: a record put
    /// while alone reached no DHT server. The DHT republishes on its own after that.
    pub fn republish_on_join(&mut self, kad: &mut kad::Behaviour<kad::store::MemoryStore>, has_peers: bool) {
        let joined = has_peers && !self.had_peers;
        self.had_peers = has_peers;
        if !joined {
            return;
        }
        for m in &self.provided {
            let _ = kad.start_providing(key(m));
        }
    }

    pub fn provided(&self) -> Vec<String> {
        let mut v: Vec<String> = self.provided.iter().cloned().collect();
        v.sort();
        v
    }

    /// Starts a lookup; the reply gets the providers found (this node excluded).
    pub fn find(&mut self, kad: &mut kad::Behaviour<kad::store::MemoryStore>, model: &str, reply: FoundReply) {
        if self.lookups.len() >= MAX_LOOKUPS {
            let _ = reply.send(Err("too many provider lookups in flight".into()));
            return;
        }
        let id = kad.get_providers(key(model));
        self.lookups.insert(id, (reply, HashSet::new()));
    }

    /// Handles a query's progress. Returns the providers to dial now (while the query still
    /// knows their addresses) and whether the lookup is answered (the first providers found
    /// answer it: a consumer wants an Oracle soon, not the complete list).
    pub fn on_progress(
        &mut self,
        me: PeerId,
        id: kad::QueryId,
        result: kad::GetProvidersResult,
        last: bool,
    ) -> (Vec<PeerId>, bool) {
        let mut fresh = vec![];
        let done = {
            let Some((_, found)) = self.lookups.get_mut(&id) else { return (fresh, false) };
            match result {
                Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                    for p in providers {
                        if p != me && found.len() < MAX_FOUND && found.insert(p) {
                            fresh.push(p);
                        }
                    }
                    last || !found.is_empty()
                }
                Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => true,
                Err(e) => {
                    tracing::debug!("provider lookup ended: {e}");
                    true
                }
            }
        };
        if done {
            if let Some((reply, found)) = self.lookups.remove(&id) {
                let _ = reply.send(Ok(found.into_iter().collect()));
            }
        }
        (fresh, done)
    }

    /// Drops lookups whose asker went away.
    pub fn prune(&mut self) {
        self.lookups.retain(|_, (r, _)| !r.is_closed());
    }
}
