//! A gossip work topic per model (`shard-work/<model id>`), so a scout drafting for model A does
//! not receive, validate and forward model B's work.
//!
//! A node that says which models it drafts for (`PUT /work-topics`) subscribes to their topics
//! and leaves the shared `shard-work` topic; a node that says nothing stays on `shard-work` only
//! (older nodes, the web scout). `POST /broadcast-work` publishes a work item that names its
//! model on that model's topic when someone is subscribed there, and on `shard-work` when someone
//! is subscribed there: each subscriber gets it once, and the per-model subscribers only their
//! models' work.

use crate::api::{call, parse_body, ApiError, AppState};
use crate::net::{Command, TOPIC_WORK};
use axum::{body::Bytes, extract::rejection::BytesRejection, extract::State, Json};
use libp2p::gossipsub::{IdentTopic, TopicHash};
use serde_json::{json, Value};
use std::sync::Arc;

/// Most model topics one node subscribes to.
pub const MAX_WORK_TOPICS: usize = 8;
/// Longest model id in a topic name (as in a handshake's `models`).
pub const MAX_MODEL_CHARS: usize = 256;
pub const WORK_TOPIC_PREFIX: &str = "shard-work/";

pub fn work_topic(model: &str) -> IdentTopic {
    IdentTopic::new(format!("{WORK_TOPIC_PREFIX}{model}"))
}

/// The model a per-model work topic is for (None for any other topic).
pub fn model_of(topic: &TopicHash) -> Option<&str> {
    topic.as_str().strip_prefix(WORK_TOPIC_PREFIX)
}

pub fn valid_model(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_MODEL_CHARS && !s.chars().any(char::is_control)
}

/// The work topics of this node: the models it drafts for (empty: the shared topic).
#[derive(Default)]
pub struct WorkTopics {
    pub models: Vec<String>,
}

impl WorkTopics {
    /// Whether a message on `topic` is work this node takes.
    pub fn takes(&self, topic: &TopicHash) -> bool {
        match model_of(topic) {
            Some(m) => self.models.iter().any(|x| x == m),
            None => self.models.is_empty() && *topic == IdentTopic::new(TOPIC_WORK).hash(),
        }
    }

    /// Switches the subscriptions to `models` (empty: back to the shared topic).
    pub fn set(&mut self, gs: &mut libp2p::gossipsub::Behaviour, models: Vec<String>) -> Result<(), String> {
        let shared = IdentTopic::new(TOPIC_WORK);
        for m in &self.models {
            if !models.contains(m) {
                gs.unsubscribe(&work_topic(m));
            }
        }
        for m in &models {
            gs.subscribe(&work_topic(m)).map_err(|e| format!("subscribe to {m:?}: {e}"))?;
        }
        if models.is_empty() {
            gs.subscribe(&shared).map_err(|e| format!("subscribe to {TOPIC_WORK}: {e}"))?;
        } else {
            gs.unsubscribe(&shared);
        }
        self.models = models;
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        if self.models.is_empty() {
            json!([TOPIC_WORK])
        } else {
            json!(self.models.iter().map(|m| work_topic(m).to_string()).collect::<Vec<_>>())
        }
    }
}

/// The topics to publish a work item on: its model's topic and the shared one, each only where
/// some peer is subscribed (`subscribed` tells).
pub fn publish_topics(work: &Value, subscribed: impl Fn(&TopicHash) -> bool) -> Vec<IdentTopic> {
    let mut out = vec![];
    if let Some(m) = work.get("model").and_then(Value::as_str).filter(|m| valid_model(m)) {
        let t = work_topic(m);
        if subscribed(&t.hash()) {
            out.push(t);
        }
    }
    let shared = IdentTopic::new(TOPIC_WORK);
    if subscribed(&shared.hash()) || out.is_empty() {
        out.push(shared); // with no subscriber anywhere, the shared topic reports "no peers"
    }
    out
}

/// `PUT /work-topics {"models": [...]}`: the models this node drafts for.
pub async fn put_work_topics(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let m = parse_body(body, &["models"])?;
    let bad = || {
        ApiError::bad(format!(
            "`models` must be a list of at most {MAX_WORK_TOPICS} model ids of 1 to {MAX_MODEL_CHARS} printable characters"
        ))
    };
    let Some(Value::Array(list)) = m.get("models") else { return Err(bad()) };
    if list.len() > MAX_WORK_TOPICS {
        return Err(bad());
    }
    let mut models: Vec<String> = vec![];
    for v in list {
        let s = v.as_str().filter(|s| valid_model(s)).ok_or_else(bad)?;
        if !models.iter().any(|x| x == s) {
            models.push(s.to_string());
        }
    }
    let topics = call(&st, |r| Command::SetWorkTopics(models, r)).await?.map_err(ApiError::bad)?;
    Ok(Json(json!({"ok": true, "work_topics": topics})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_takes_only_its_models_work() {
        let mut t = WorkTopics::default();
        let shared = IdentTopic::new(TOPIC_WORK).hash();
        assert!(t.takes(&shared) && !t.takes(&work_topic("A").hash()));
        t.models = vec!["A".into()];
        assert!(t.takes(&work_topic("A").hash()));
        assert!(!t.takes(&work_topic("B").hash()) && !t.takes(&shared));
        assert_eq!(model_of(&work_topic("org/m-7b").hash()), Some("org/m-7b"));
    }

    #[test]
    fn work_goes_where_subscribers_are() {
        let w = json!({"work_id": "w", "model": "A"});
        let a = work_topic("A").hash();
        let shared = IdentTopic::new(TOPIC_WORK).hash();
        let names = |v: Vec<IdentTopic>| v.into_iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(names(publish_topics(&w, |t| *t == a)), vec!["shard-work/A"]);
        assert_eq!(names(publish_topics(&w, |_| true)), vec!["shard-work/A", "shard-work"]);
        assert_eq!(names(publish_topics(&w, |t| *t == shared)), vec!["shard-work"]);
        assert_eq!(names(publish_topics(&w, |_| false)), vec!["shard-work"]);
        // no model, or a bad one: the shared topic
        assert_eq!(names(publish_topics(&json!({"work_id": "w"}), |_| true)), vec!["shard-work"]);
        assert_eq!(names(publish_topics(&json!({"model": "a\nb"}), |_| true)), vec!["shard-work"]);
    }
}
