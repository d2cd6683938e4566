//! Who asked for a command and why: stamped on every event the command appends.
//!
//! The keys are part of the stored contract, like event types: readers and receivers
//! follow an order from the storefront's request to every effect through them.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::time::Instant;

use super::idempotency::KeyClaim;
use super::vault::DataKeyWrite;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMetadata {
    /// Unique per command, shared by all the events it appended.
    pub command_id: Uuid,
    pub idempotency_key: Option<String>,
    /// Groups everything one storefront interaction caused.
    pub correlation_id: String,
    /// What directly caused this command: the caller's id, or the command itself.
    pub causation_id: String,
    /// W3C trace context.
    pub traceparent: String,
    /// The name of the API token (or the engine's process) that issued the command.
    pub actor: String,
    /// Whom the actor says it acts for (`X-Actor`: a storefront's staff user). A claim
    /// of the client's, recorded as such.
    pub on_behalf_of: Option<String>,
    pub received_at: DateTime<Utc>,
    /// When the command must have started (reached its aggregate, and the database), or
    /// be refused as saturated with nothing written. Not stored: it bounds this process's
    /// work, and means nothing to a reader. `None` for work that must never be shed,
    /// such as releasing stock or a process manager's commands.
    pub start_by: Option<Instant>,
    /// The request's `Idempotency-Key`, to be claimed in the commit of this command's
    /// events (not stored in them: the key is, as `idempotency_key`).
    pub claim: Option<KeyClaim>,
    /// The data key this command's personal data is sealed under (`store::vault`), or
    /// the destruction of a customer's keys: written in the commit of its events. Never
    /// passed on to the commands it causes.
    pub data_key: Option<DataKeyWrite>,
}

impl CommandMetadata {
    /// Metadata for a command this one causes: same correlation and trace, this
    /// command as the cause.
    pub fn caused(&self) -> CommandMetadata {
        CommandMetadata {
            command_id: Uuid::now_v7(),
            idempotency_key: None,
            correlation_id: self.correlation_id.clone(),
            causation_id: self.command_id.to_string(),
            traceparent: self.traceparent.clone(),
            actor: self.actor.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
            received_at: self.received_at,
            start_by: self.start_by,
            claim: None,
            data_key: None,
        }
    }

    /// The same command, never shed: once a placement holds stock, finishing (or undoing)
    /// it costs less than leaving it half done.
    pub fn unbounded(mut self) -> CommandMetadata {
        self.start_by = None;
        self
    }

    /// Metadata for a command the engine issues itself (a process manager's).
    pub fn system(actor: &str, correlation_id: &str, causation_id: &str) -> CommandMetadata {
        CommandMetadata {
            command_id: Uuid::now_v7(),
            idempotency_key: None,
            correlation_id: correlation_id.to_owned(),
            causation_id: causation_id.to_owned(),
            traceparent: TraceParent::generate().as_str().to_owned(),
            actor: actor.to_owned(),
            on_behalf_of: None,
            received_at: Utc::now(),
            start_by: None,
            claim: None,
            data_key: None,
        }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(8);
        map.insert("command_id".into(), self.command_id.to_string());
        if let Some(key) = &self.idempotency_key {
            map.insert("idempotency_key".into(), key.clone());
        }
        map.insert("correlation_id".into(), self.correlation_id.clone());
        map.insert("causation_id".into(), self.causation_id.clone());
        map.insert("traceparent".into(), self.traceparent.clone());
        map.insert("actor".into(), self.actor.clone());
        if let Some(whom) = &self.on_behalf_of {
            map.insert("on_behalf_of".into(), whom.clone());
        }
        map.insert(
            "received_at".into(),
            self.received_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        );
        map
    }
}

/// A W3C `traceparent` (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

impl TraceParent {
    /// Accepts a well-formed header; anything else is ignored by the caller, who starts a
    /// new trace, as the spec asks of a receiver that cannot parse the header.
    pub fn parse(raw: &str) -> Option<Self> {
        let parts: Vec<&str> = raw.trim().split('-').collect();
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return None;
        };
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = *version == "00"
            && hex(trace_id, 32)
            && hex(parent_id, 16)
            && hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && parent_id.bytes().any(|b| b != b'0');
        valid.then(|| Self(raw.trim().to_owned()))
    }

    /// A new trace, sampled, with random ids.
    pub fn generate() -> Self {
        let trace = Uuid::new_v4().simple().to_string();
        let span = &Uuid::new_v4().simple().to_string()[..16];
        Self(format!("00-{trace}-{span}-01"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32 hex digits shared by every span of the trace.
    pub fn trace_id(&self) -> &str {
        // Parsed or generated: `00-` then the trace id.
        &self.0[3..35]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_kept_and_a_broken_one_refused() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(good).unwrap().as_str(), good);
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7").is_none()
        );
        assert!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(TraceParent::parse(TraceParent::generate().as_str()).is_some());
    }
}
