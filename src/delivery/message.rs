//! One event as it goes out: the body every sink sends, and what a receiver needs
//! beside it (the id it dedupes on, the trace).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::reader::{Cursor, LogEntry};

/// Rendered once per event and per subscription, then sent as often as it takes: the
/// body (and so its signature's input) is the same on every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The delivery token: `webhook-id` and `Nats-Msg-Id`.
    pub event_id: Uuid,
    pub event_type: String,
    /// One aggregate's events, delivered in order: `order/<id>`, `inventory/<sku>`.
    pub stream: String,
    pub sequence: i64,
    pub cursor: Cursor,
    pub traceparent: Option<String>,
    pub body: String,
}

impl Message {
    pub fn of(entry: &LogEntry) -> Message {
        let metadata = entry.metadata.as_deref().unwrap_or("{}");
        // Only the trace is wanted: serde skips the other fields without building them.
        #[derive(Deserialize)]
        struct Trace {
            traceparent: Option<String>,
        }
        let traceparent = serde_json::from_str::<Trace>(metadata)
            .ok()
            .and_then(|m| m.traceparent);
        let string = |s: &str| serde_json::Value::from(s).to_string();
        // The stored payload and metadata are JSON already: spliced in, not re-encoded.
        let body = format!(
            concat!(
                r#"{{"id":"{id}","type":{ty},"version":{version},"timestamp":"{at}","#,
                r#""position":{position},"aggregate_type":{aggregate_type},"#,
                r#""aggregate_id":{aggregate_id},"sequence":{sequence},"#,
                r#""data":{data},"metadata":{metadata}}}"#
            ),
            id = entry.event_id,
            ty = string(&entry.event_type),
            version = string(&entry.event_version),
            at = entry
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            position = entry.cursor.position,
            aggregate_type = string(&entry.aggregate_type),
            aggregate_id = string(&entry.aggregate_id),
            sequence = entry.sequence,
            data = entry.payload,
            metadata = metadata,
        );
        Message {
            event_id: entry.event_id,
            event_type: entry.event_type.clone(),
            stream: format!("{}/{}", entry.aggregate_type, entry.aggregate_id),
            sequence: entry.sequence,
            cursor: entry.cursor,
            traceparent,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_json_carrying_the_event_and_its_trace() {
        let entry = LogEntry {
            cursor: Cursor {
                transaction_id: 7,
                position: 42,
            },
            event_id: Uuid::nil(),
            aggregate_type: "order".into(),
            aggregate_id: "ord-\"1\"".into(),
            sequence: 3,
            event_type: "payment.captured".into(),
            event_version: "1.0".into(),
            payload: r#"{"amount":{"amount":1200,"currency":"EUR"}}"#.into(),
            metadata: Some(
                r#"{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#
                    .into(),
            ),
            recorded_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let message = Message::of(&entry);
        let body: serde_json::Value = serde_json::from_str(&message.body).unwrap();
        assert_eq!(body["type"], "payment.captured");
        assert_eq!(body["aggregate_id"], "ord-\"1\"");
        assert_eq!(body["position"], 42);
        assert_eq!(body["data"]["amount"]["amount"], 1200);
        assert_eq!(message.stream, "order/ord-\"1\"");
        assert_eq!(
            message.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }
}
