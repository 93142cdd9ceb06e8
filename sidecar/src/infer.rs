//! `/shard/infer/1.0.0`: streaming remote inference over raw libp2p streams (libp2p-stream).
//!
//! Framing: newline-delimited JSON, each line at most [`MAX_LINE`] bytes. The asker writes one
//! line (the request object); it may close its write side then (this daemon keeps it open until
//! the answer ends, so that dropping the stream resets it). The Oracle reads only that line,
//! writes any number of lines (JSON objects) and closes.

use crate::api::{call, parse_body, parse_peer_id, ApiError, AppState};
use crate::net::{Command, Stats};
use crate::util::{self, RateLimiter};
use axum::{
    body::{Body, Bytes},
    extract::{rejection::BytesRejection, rejection::QueryRejection, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures::{
    io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    AsyncBufRead, StreamExt,
};
use libp2p::{PeerId, Stream, StreamProtocol};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

pub const PROTO_INFER: &str = "/shard/infer/1.0.0";
/// Longest line, without its newline.
pub const MAX_LINE: usize = 256 * 1024;
/// How long the Oracle waits for the asker's request line.
pub const REQUEST_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the Oracle waits for the node's `POST /infer-response`.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(10);
/// The asker gives up when no line arrives for this long.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(120);
/// The Oracle gives up when the node's body sends nothing for this long.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Opening a stream (and writing the request) must finish within this.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most inbound infer requests at once (waiting for the node or being answered).
pub const MAX_INBOUND: usize = 32;
/// Writing an error line before closing must finish within this.
const ERROR_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

struct PendingInfer {
    stream: Stream,
    _permit: OwnedSemaphorePermit,
}

pub struct Infer {
    control: libp2p_stream::Control,
    pending: Mutex<HashMap<String, PendingInfer>>,
    next_id: AtomicU64,
    slots: Arc<Semaphore>,
    limiter: Arc<Mutex<RateLimiter>>,
    stats: Arc<Stats>,
    events: broadcast::Sender<Value>,
}

pub enum LineRead {
    /// A full line (newline removed) is in the buffer.
    Line,
    /// End of stream; the buffer holds whatever came after the last newline.
    Eof,
    /// The line is longer than the limit.
    TooLong,
}

/// Reads one line into `buf` (cleared first), never holding more than `limit` bytes.
pub async fn read_line_limited<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            if buf.len() > limit {
                return Ok(LineRead::TooLong);
            }
            return Ok(LineRead::Eof);
        }
        if let Some(i) = avail.iter().position(|b| *b == b'\n') {
            if buf.len() + i > limit + 1 {
                return Ok(LineRead::TooLong);
            }
            buf.extend_from_slice(&avail[..i]);
            r.consume_unpin(i + 1);
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            if buf.len() > limit {
                return Ok(LineRead::TooLong);
            }
            return Ok(LineRead::Line);
        }
        let n = avail.len();
        if buf.len() + n > limit + 1 {
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(avail);
        r.consume_unpin(n);
    }
}

/// A line that is a JSON object (surrounding whitespace ignored), re-serialized compactly
/// only when it needs to be; `Ok(None)` for a blank line.
fn check_object_line(line: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(trimmed) {
        Ok(Value::Object(_)) => {
            let mut out = Vec::with_capacity(trimmed.len() + 1);
            out.extend_from_slice(trimmed);
            out.push(b'\n');
            Ok(Some(out))
        }
        Ok(_) => Err("a line is not a JSON object".into()),
        Err(e) => Err(format!("a line is not valid JSON: {e}")),
    }
}

fn error_line(message: &str, sidecar: bool) -> Vec<u8> {
    let mut v = if sidecar {
        json!({"type": "error", "message": message, "source": "sidecar"})
    } else {
        json!({"type": "error", "message": message})
    }
    .to_string()
    .into_bytes();
    v.push(b'\n');
    v
}

async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
}

/// Writes `{"type":"error","message":...}` and closes, giving up after a few seconds.
async fn fail_stream<W: AsyncWrite + Unpin>(w: &mut W, message: &str) {
    let line = error_line(message, false);
    let _ = tokio::time::timeout(ERROR_WRITE_TIMEOUT, async {
        write_flush(w, &line).await?;
        w.close().await
    })
    .await;
}

impl Infer {
    pub fn new(
        control: libp2p_stream::Control,
        limiter: Arc<Mutex<RateLimiter>>,
        stats: Arc<Stats>,
        events: broadcast::Sender<Value>,
    ) -> Arc<Infer> {
        Arc::new(Infer {
            control,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(MAX_INBOUND)),
            limiter,
            stats,
            events,
        })
    }

    pub fn pending_len(&self) -> usize {
        self.pending.lock().unwrap().len()
    }

    /// Accepts inbound infer streams until the swarm goes away.
    pub async fn serve(self: Arc<Self>) {
        let mut control = self.control.clone();
        let mut incoming = match control.accept(StreamProtocol::new(PROTO_INFER)) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!("cannot accept {PROTO_INFER} streams: {e}");
                return;
            }
        };
        while let Some((peer, stream)) = incoming.next().await {
            let me = self.clone();
            tokio::spawn(async move { me.inbound(peer, stream).await });
        }
    }

    async fn inbound(self: Arc<Self>, peer: PeerId, mut stream: Stream) {
        let stats = &self.stats;
        let allowed = self.limiter.lock().unwrap().allow(&peer, Instant::now());
        if !allowed {
            stats.dropped_rate.fetch_add(1, Ordering::Relaxed);
            stats.infer_dropped.fetch_add(1, Ordering::Relaxed);
            fail_stream(&mut stream, "rate limited").await;
            return;
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            stats.infer_dropped.fetch_add(1, Ordering::Relaxed);
            fail_stream(&mut stream, "busy").await;
            return;
        };
        let mut reader = BufReader::with_capacity(16 * 1024, stream);
        let mut buf = Vec::new();
        let read = tokio::time::timeout(REQUEST_LINE_TIMEOUT, read_line_limited(&mut reader, &mut buf, MAX_LINE)).await;
        let mut stream = reader.into_inner();
        let problem = match read {
            Err(_) => Some(format!("no request line within {} s", REQUEST_LINE_TIMEOUT.as_secs())),
            Ok(Err(e)) => {
                tracing::debug!("infer request from {peer}: {e}");
                stats.infer_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Ok(LineRead::TooLong)) => {
                stats.dropped_oversize.fetch_add(1, Ordering::Relaxed);
                Some(format!("request line longer than {MAX_LINE} bytes"))
            }
            Ok(Ok(LineRead::Eof)) if buf.trim_ascii().is_empty() => Some("no request line".into()),
            Ok(Ok(_)) => None,
        };
        if let Some(p) = problem {
            stats.infer_dropped.fetch_add(1, Ordering::Relaxed);
            fail_stream(&mut stream, &p).await;
            return;
        }
        let request = match serde_json::from_slice::<Value>(buf.trim_ascii()) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                stats.infer_dropped.fetch_add(1, Ordering::Relaxed);
                fail_stream(&mut stream, "invalid request: not a JSON object").await;
                return;
            }
            Err(e) => {
                stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
                stats.infer_dropped.fetch_add(1, Ordering::Relaxed);
                fail_stream(&mut stream, &format!("invalid request: {e}")).await;
                return;
            }
        };
        let id = format!("i{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.pending.lock().unwrap().insert(id.clone(), PendingInfer { stream, _permit: permit });
        stats.infer_requests.fetch_add(1, Ordering::Relaxed);
        let _ = self.events.send(json!({
            "type": "infer_request",
            "request_id": id,
            "from": peer.to_string(),
            "received_at_ms": util::now_ms(),
            "request": request,
        }));
        tokio::time::sleep(ANSWER_DEADLINE).await;
        let left = self.pending.lock().unwrap().remove(&id);
        if let Some(mut p) = left {
            stats.infer_unanswered.fetch_add(1, Ordering::Relaxed);
            fail_stream(&mut p.stream, "the oracle did not answer").await;
        }
    }

    fn take(&self, id: &str) -> Option<PendingInfer> {
        self.pending.lock().unwrap().remove(id)
    }
}

/// `POST /infer`: asks a peer to generate; streams its lines back as NDJSON.
pub async fn infer(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let m = parse_body(body, &["peer_id", "request"])?;
    let peer = parse_peer_id(m.get("peer_id"), "peer_id")?;
    let request = m.get("request").ok_or_else(|| ApiError::bad("`request` is required"))?;
    util::validate_object(request, "request").map_err(ApiError::bad)?;
    if peer == st.keypair.public().to_peer_id() {
        return Err(ApiError::bad("`peer_id` is this node itself"));
    }
    let connected = call(&st, |reply| Command::IsConnected(peer, reply)).await?;
    if !connected {
        return Err(ApiError(StatusCode::BAD_GATEWAY, format!("not connected to {peer}")));
    }
    let mut line = serde_json::to_vec(request).unwrap_or_default();
    line.push(b'\n');
    let mut control = st.infer.control.clone();
    let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
        let mut s = control.open_stream(peer, StreamProtocol::new(PROTO_INFER)).await.map_err(|e| e.to_string())?;
        write_flush(&mut s, &line).await.map_err(|e| format!("cannot send the request: {e}"))?;
        // The write side stays open until the answer ends: yamux resets a dropped stream only
        // while it is not half-closed, and that reset is how the Oracle learns that the HTTP
        // client went away.
        Ok::<_, String>(s)
    })
    .await;
    let stream = match opened {
        Err(_) => {
            return Err(ApiError(
                StatusCode::BAD_GATEWAY,
                format!("infer request to {peer} failed: timed out opening the stream"),
            ))
        }
        Ok(Err(e)) => return Err(ApiError(StatusCode::BAD_GATEWAY, format!("infer request to {peer} failed: {e}"))),
        Ok(Ok(s)) => s,
    };
    st.stats.infer_outbound.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(pump(st.clone(), peer, stream, tx));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// Forwards the Oracle's lines to the HTTP answer; drops (resets) the stream when the HTTP
/// client goes away.
async fn pump(st: Arc<AppState>, peer: PeerId, stream: Stream, tx: mpsc::Sender<Result<Bytes, Infallible>>) {
    let mut r = BufReader::with_capacity(16 * 1024, stream);
    let mut buf = Vec::new();
    let fail = |why: String| Bytes::from(error_line(&why, true));
    loop {
        let read = tokio::select! {
            _ = tx.closed() => {
                tracing::debug!("infer client went away; resetting the stream to {peer}");
                return;
            }
            r = tokio::time::timeout(LINE_TIMEOUT, read_line_limited(&mut r, &mut buf, MAX_LINE)) => r,
        };
        let (eof, out) = match read {
            Err(_) => (true, Err(format!("no line from the peer within {} s", LINE_TIMEOUT.as_secs()))),
            Ok(Err(e)) => (true, Err(format!("the stream broke: {e}"))),
            Ok(Ok(LineRead::TooLong)) => (true, Err(format!("the peer sent a line longer than {MAX_LINE} bytes"))),
            Ok(Ok(LineRead::Eof)) => (true, check_object_line(&buf).map_err(|e| format!("invalid answer: {e}"))),
            Ok(Ok(LineRead::Line)) => (false, check_object_line(&buf).map_err(|e| format!("invalid answer: {e}"))),
        };
        match out {
            Err(why) => {
                let _ = tx.send(Ok(fail(why))).await;
                return;
            }
            Ok(Some(line)) => {
                if tx.send(Ok(Bytes::from(line))).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
        }
        if eof {
            // yamux reports a reset like a clean end of stream: a connection that dropped
            // is the tell (the Oracle's daemon always closes its streams properly).
            tokio::time::sleep(Duration::from_millis(100)).await;
            let connected = call(&st, |reply| Command::IsConnected(peer, reply)).await.unwrap_or(true);
            if !connected {
                let _ = tx.send(Ok(fail("the connection to the peer closed before the answer ended".into()))).await;
            }
            return;
        }
    }
}

/// Reads and discards the rest of a refused body for a moment, so that a client that writes its
/// whole body before reading gets to see the error status.
async fn drain(data: &mut axum::body::BodyDataStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut total = 0usize;
        while let Some(Ok(c)) = data.next().await {
            total += c.len();
            if total > 8 * 1024 * 1024 {
                break;
            }
        }
    })
    .await;
}

/// `POST /infer-response?request_id=ID`: the node's streaming NDJSON answer.
pub async fn infer_response(
    State(st): State<Arc<AppState>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("bad query string: {e}")))?;
    if let Some(k) = q.keys().find(|k| k.as_str() != "request_id") {
        return Err(ApiError::bad(format!("unknown query parameter `{k}` (allowed: request_id)")));
    }
    let id = q.get("request_id").ok_or_else(|| ApiError::bad("query parameter `request_id` is required"))?;
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::bad("`request_id` must be 1 to 64 characters"));
    }
    let Some(mut p) = st.infer.take(id) else {
        return Err(ApiError(StatusCode::NOT_FOUND, "unknown or expired request_id".into()));
    };
    let stats = &st.stats;
    let gone = || {
        stats.infer_asker_gone.fetch_add(1, Ordering::Relaxed);
        ApiError(StatusCode::GONE, "the asker went away".into())
    };
    let mut data = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut lines = 0u64;
    let mut ended = false;
    while !ended {
        let chunk = match tokio::time::timeout(BODY_IDLE_TIMEOUT, data.next()).await {
            Err(_) => {
                fail_stream(&mut p.stream, "the oracle stalled").await;
                return Err(ApiError(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("nothing received for {} s; the stream was closed", BODY_IDLE_TIMEOUT.as_secs()),
                ));
            }
            Ok(None) => {
                ended = true;
                Bytes::new()
            }
            Ok(Some(Err(e))) => {
                fail_stream(&mut p.stream, "the oracle's answer broke off").await;
                return Err(ApiError::bad(format!("cannot read body: {e}")));
            }
            Ok(Some(Ok(c))) => c,
        };
        buf.extend_from_slice(&chunk);
        // complete lines; at the end of the body the rest is the last line
        let mut start = 0;
        loop {
            let end = match buf[start..].iter().position(|b| *b == b'\n') {
                Some(i) => start + i,
                None if ended && start < buf.len() => buf.len(),
                None => break,
            };
            let line = &buf[start..end];
            start = (end + 1).min(buf.len());
            if line.len() > MAX_LINE + 1 || (line.len() > MAX_LINE && line.last() != Some(&b'\r')) {
                fail_stream(&mut p.stream, &format!("the oracle sent a line longer than {MAX_LINE} bytes")).await;
                drain(&mut data).await;
                return Err(ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("line {} is longer than {MAX_LINE} bytes", lines + 1),
                ));
            }
            let out = match check_object_line(line) {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(e) => {
                    fail_stream(&mut p.stream, "the oracle sent an invalid line").await;
                    drain(&mut data).await;
                    return Err(ApiError::bad(format!("line {}: {e}", lines + 1)));
                }
            };
            match tokio::time::timeout(LINE_TIMEOUT, write_flush(&mut p.stream, &out)).await {
                Ok(Ok(())) => lines += 1,
                _ => return Err(gone()),
            }
            if end >= buf.len() {
                break;
            }
        }
        buf.drain(..start.min(buf.len()));
        if buf.len() > MAX_LINE + 1 {
            fail_stream(&mut p.stream, &format!("the oracle sent a line longer than {MAX_LINE} bytes")).await;
            drain(&mut data).await;
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("line {} is longer than {MAX_LINE} bytes", lines + 1),
            ));
        }
    }
    match tokio::time::timeout(ERROR_WRITE_TIMEOUT, p.stream.close()).await {
        Ok(Ok(())) => Ok(Json(json!({"ok": true, "lines": lines}))),
        _ => Err(gone()),
    }
}
