//! The control API on 127.0.0.1: axum handlers that only send commands to the event loop.

use crate::net::{Command, Pending, Reply, Stats, TOPIC_RESULT};
use crate::util::{self, LocalInfo};
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Query, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post, put},
    Json, Router,
};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use futures::{Stream, StreamExt};
use libp2p::{identity, PeerId};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

/// Largest request body.
pub const BODY_LIMIT: usize = 512 * 1024;
/// How long `POST /send-verify` waits for the Oracle's answer.
pub const SEND_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `POST /broadcast-work` with `peers` waits for the acknowledgements.
pub const DIRECT_WORK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most peers in one direct `broadcast-work`.
pub const MAX_DIRECT_PEERS: usize = 64;

pub struct AppState {
    pub commands: mpsc::Sender<Command>,
    pub events: broadcast::Sender<Value>,
    pub stats: Arc<Stats>,
    pub token: Vec<u8>,
    pub keypair: identity::Keypair,
    pub shutdown: mpsc::Sender<()>,
    pub infer: Arc<crate::infer::Infer>,
}

type St = State<Arc<AppState>>;

pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/topology", get(topology))
        .route("/peers", get(peers))
        .route("/stats", get(stats))
        .route("/local-info", put(local_info))
        .route("/broadcast-work", post(broadcast_work))
        .route("/publish-result", post(publish_result))
        .route("/work-topics", put(crate::topics::put_work_topics))
        .route("/send-verify", post(send_verify))
        .route("/verify-response", post(verify_response))
        .route("/infer", post(crate::infer::infer))
        .route("/infer-response", post(crate::infer::infer_response))
        .route("/pop-result", get(pop_result))
        .route("/find-providers", post(crate::providers::find_providers))
        .route("/events", get(events))
        .route("/sign", post(sign))
        .route("/verify-signature", post(verify_signature))
        .route("/shutdown", post(shutdown))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn auth(State(st): St, headers: HeaderMap, req: Request, next: Next) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().as_bytes().to_vec());
    match presented {
        Some(t) if util::token_matches(&t, &st.token) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "missing or invalid control token (Authorization: Bearer TOKEN)"})),
        )
            .into_response(),
    }
}

/// Sends a command to the event loop and waits for its reply.
pub(crate) async fn call<T>(st: &AppState, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    let busy = || ApiError(StatusCode::SERVICE_UNAVAILABLE, "network event loop is busy or stopped".into());
    tokio::time::timeout(Duration::from_secs(5), st.commands.send(make(tx)))
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    tokio::time::timeout(Duration::from_secs(5), rx).await.map_err(|_| busy())?.map_err(|_| busy())
}

/// Parses a JSON object body, rejecting unknown fields.
pub(crate) fn parse_body(
    body: Result<Bytes, BytesRejection>,
    allowed: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(status, format!("body is larger than the limit of {BODY_LIMIT} bytes"))
        } else {
            ApiError(status, format!("cannot read body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad("body must be a JSON object, got an empty body"));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("body is not valid JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(ApiError::bad("body must be a JSON object"));
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad(format!("unknown field `{k}` (allowed: {})", allowed.join(", "))));
    }
    Ok(map)
}

pub(crate) fn parse_peer_id(v: Option<&Value>, field: &str) -> Result<PeerId, ApiError> {
    match v {
        None => Err(ApiError::bad(format!("`{field}` is required"))),
        Some(Value::String(s)) => {
            s.parse().map_err(|_| ApiError::bad(format!("`{field}` is not a valid peer id: {s:?}")))
        }
        Some(_) => Err(ApiError::bad(format!("`{field}` must be a string"))),
    }
}

fn b64_field(m: &Map<String, Value>, field: &str) -> Result<Option<Vec<u8>>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            B64.decode(s.trim()).map(Some).map_err(|e| ApiError::bad(format!("`{field}` is not valid base64: {e}")))
        }
        Some(_) => Err(ApiError::bad(format!("`{field}` must be a base64 string"))),
    }
}

async fn health(State(st): St) -> Result<Json<Value>, ApiError> {
    let mut v = call(&st, Command::Health).await?;
    v["pending_infer"] = json!(st.infer.pending_len());
    Ok(Json(v))
}

async fn topology(State(st): St) -> ApiResult {
    Ok(Json(call(&st, Command::Topology).await?))
}

async fn peers(State(st): St) -> ApiResult {
    Ok(Json(call(&st, Command::Peers).await?))
}

async fn stats(State(st): St) -> ApiResult {
    Ok(Json(st.stats.to_json()))
}

async fn local_info(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let m = parse_body(
        body,
        &["roles", "models", "capacity", "load", "agent", "protocol_version", "draft_model", "pair_key"],
    )?;
    let info = LocalInfo::parse(&Value::Object(m), true).map_err(ApiError::bad)?;
    let v = info.to_value();
    call(&st, |r| Command::SetLocalInfo(info, r)).await?;
    Ok(Json(json!({"ok": true, "local_info": v})))
}

async fn broadcast_work(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let m = parse_body(body, &["work", "peers"])?;
    let work = m.get("work").ok_or_else(|| ApiError::bad("`work` is required"))?;
    util::validate_work_object(work, "work").map_err(ApiError::bad)?;
    let peers = match m.get("peers") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(ApiError::bad("`peers` must not be empty (omit it to publish on gossipsub)"));
            }
            if list.len() > MAX_DIRECT_PEERS {
                return Err(ApiError::bad(format!("`peers` has more than {MAX_DIRECT_PEERS} items")));
            }
            Some(list.iter().map(|p| parse_peer_id(Some(p), "peers[]")).collect::<Result<Vec<_>, _>>()?)
        }
        Some(_) => return Err(ApiError::bad("`peers` must be a list of peer id strings")),
    };
    let Some(peers) = peers else {
        let (work, data) = (work.clone(), serde_json::to_vec(work).unwrap_or_default());
        let out = call(&st, |reply| Command::PublishWork { work, data, reply }).await?;
        return Ok(Json(out));
    };
    let work = work.clone();
    let (pending, not_connected) = call(&st, |reply| Command::SendWork { peers, work, reply }).await?;
    let waits = pending.into_iter().map(|(p, rx): (PeerId, Pending)| async move {
        let r = match tokio::time::timeout(DIRECT_WORK_TIMEOUT, rx).await {
            Err(_) => Err("timed out waiting for the acknowledgement".to_string()),
            Ok(Err(_)) => Err("request dropped".to_string()),
            Ok(Ok(r)) => r,
        };
        (p, r)
    });
    let results = futures::future::join_all(waits).await;
    let mut delivered = vec![];
    let mut failed = vec![];
    for (p, r) in results {
        match r {
            Ok(_) => delivered.push(p.to_string()),
            Err(e) => failed.push(json!({"peer_id": p.to_string(), "error": e})),
        }
    }
    for p in not_connected {
        failed.push(json!({"peer_id": p.to_string(), "error": "not connected"}));
    }
    let mut out = json!({
        "published": !delivered.is_empty(),
        "delivered_to": delivered,
        "failed": failed,
    });
    if delivered.is_empty() {
        out["reason"] = json!("no listed peer accepted the work");
    }
    Ok(Json(out))
}

async fn publish_result(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let m = parse_body(body, &["result"])?;
    let result = m.get("result").ok_or_else(|| ApiError::bad("`result` is required"))?;
    util::validate_work_object(result, "result").map_err(ApiError::bad)?;
    let data = serde_json::to_vec(result).unwrap_or_default();
    let out = call(&st, |reply| Command::Publish { topic: TOPIC_RESULT, data, reply }).await?;
    Ok(Json(out))
}

async fn send_verify(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let m = parse_body(body, &["peer_id", "request"])?;
    let peer = parse_peer_id(m.get("peer_id"), "peer_id")?;
    let request = m.get("request").ok_or_else(|| ApiError::bad("`request` is required"))?;
    util::validate_object(request, "request").map_err(ApiError::bad)?;
    if peer == st.keypair.public().to_peer_id() {
        return Err(ApiError::bad("`peer_id` is this node itself"));
    }
    let request = request.clone();
    let rx = call(&st, |reply| Command::SendVerify { peer, request, reply })
        .await?
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    match tokio::time::timeout(SEND_VERIFY_TIMEOUT, rx).await {
        Err(_) => Err(ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer from {peer} within {} s", SEND_VERIFY_TIMEOUT.as_secs()),
        )),
        Ok(Err(_)) => Err(ApiError(StatusCode::BAD_GATEWAY, "request dropped".into())),
        Ok(Ok(Err(e))) => Err(ApiError(StatusCode::BAD_GATEWAY, format!("verify request to {peer} failed: {e}"))),
        Ok(Ok(Ok(v))) => Ok(Json(json!({"response": v}))),
    }
}

async fn verify_response(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let m = parse_body(body, &["request_id", "response"])?;
    let request_id = match m.get("request_id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => s.clone(),
        Some(_) => return Err(ApiError::bad("`request_id` must be a string of 1 to 64 characters")),
        None => return Err(ApiError::bad("`request_id` is required")),
    };
    let response = m.get("response").ok_or_else(|| ApiError::bad("`response` is required"))?;
    util::validate_object(response, "response").map_err(ApiError::bad)?;
    let response = response.clone();
    call(&st, |reply| Command::VerifyResponse { request_id, response, reply })
        .await?
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e))?;
    Ok(Json(json!({"ok": true})))
}

async fn pop_result(
    State(st): St,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("bad query string: {e}")))?;
    let w = q.get("work_id").ok_or_else(|| ApiError::bad("query parameter `work_id` is required"))?;
    if w.is_empty() || w.chars().count() > util::MAX_WORK_ID_CHARS {
        return Err(ApiError::bad(format!("`work_id` must be 1 to {} characters", util::MAX_WORK_ID_CHARS)));
    }
    let w = w.clone();
    let results = call(&st, |r| Command::PopResults(w, r)).await?;
    Ok(Json(json!({ "results": results })))
}

async fn events(State(st): St) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = st.events.subscribe();
    let stats = st.stats.clone();
    let stream = BroadcastStream::new(rx).map(move |item| {
        Ok(match item {
            Ok(v) => Event::default().data(v.to_string()),
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                stats.events_lagged.fetch_add(n, Ordering::Relaxed);
                Event::default().data(json!({"type": "lagged", "missed": n}).to_string())
            }
        })
    });
    let hello = futures::stream::once(async { Ok(Event::default().comment("connected")) });
    Sse::new(hello.chain(stream)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive"))
}

async fn sign(State(st): St, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let m = parse_body(body, &["payload_b64"])?;
    let payload = b64_field(&m, "payload_b64")?.ok_or_else(|| ApiError::bad("`payload_b64` is required"))?;
    let sig = st
        .keypair
        .sign(&payload)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("signing failed: {e}")))?;
    Ok(Json(json!({
        "signature_b64": B64.encode(sig),
        "public_key_b64": B64.encode(st.keypair.public().encode_protobuf()),
        "peer_id": st.keypair.public().to_peer_id().to_string(),
    })))
}

async fn verify_signature(body: Result<Bytes, BytesRejection>) -> ApiResult {
    let m = parse_body(body, &["payload_b64", "signature_b64", "public_key_b64", "peer_id"])?;
    let payload = b64_field(&m, "payload_b64")?.ok_or_else(|| ApiError::bad("`payload_b64` is required"))?;
    let sig = b64_field(&m, "signature_b64")?.ok_or_else(|| ApiError::bad("`signature_b64` is required"))?;
    let claimed = match m.get("peer_id") {
        None | Some(Value::Null) => None,
        v => Some(parse_peer_id(v, "peer_id")?),
    };
    let key = match b64_field(&m, "public_key_b64")? {
        Some(bytes) => identity::PublicKey::try_decode_protobuf(&bytes)
            .map_err(|e| ApiError::bad(format!("`public_key_b64` is not a protobuf-encoded public key: {e}")))?,
        None => match &claimed {
            None => return Err(ApiError::bad("one of `public_key_b64` or `peer_id` is required")),
            Some(p) => util::public_key_from_peer_id(p)
                .ok_or_else(|| ApiError::bad("this peer id does not embed its public key: pass `public_key_b64`"))?,
        },
    };
    let derived = key.to_peer_id();
    if let Some(p) = claimed {
        if p != derived {
            return Ok(Json(json!({
                "valid": false,
                "peer_id": derived.to_string(),
                "reason": "public key does not match peer_id",
            })));
        }
    }
    Ok(Json(json!({
        "valid": key.verify(&payload, &sig),
        "peer_id": derived.to_string(),
    })))
}

async fn shutdown(State(st): St) -> ApiResult {
    let _ = st.shutdown.try_send(());
    Ok(Json(json!({"ok": true, "status": "shutting down"})))
}
