//! What a subscriber asked for, parsed into typed values: where events go (a webhook
//! URL or a NATS subject prefix), which event types, and the signing secrets.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::customer::CustomerEvent;
use crate::domain::inventory::InventoryEvent;
use crate::domain::order::OrderEvent;
use crate::store::reader::Cursor;
use crate::store::sealed::SealError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SubscriptionKind)]
pub enum Kind {
    Webhook,
    Nats,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Nats => "nats",
        }
    }

    pub fn parse(raw: &str) -> Option<Kind> {
        match raw {
            "webhook" => Some(Kind::Webhook),
            "nats" => Some(Kind::Nats),
            _ => None,
        }
    }
}

/// `active` delivers; `paused` (by an operator) and `disabled` (by a receiver's 410)
/// hold events at the cursor until resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SubscriptionState)]
pub enum State {
    Active,
    Paused,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Paused => "paused",
            State::Disabled => "disabled",
        }
    }

    pub fn parse(raw: &str) -> Option<State> {
        match raw {
            "active" => Some(State::Active),
            "paused" => Some(State::Paused),
            "disabled" => Some(State::Disabled),
            _ => None,
        }
    }
}

/// Which event types a subscription receives: exact names (`payment.captured`), a
/// family (`order.*`) or everything (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter(Vec<String>);

impl EventFilter {
    /// Every pattern must name at least one event type the log can hold, so a typo is
    /// refused rather than silently matching nothing.
    pub fn parse(patterns: Vec<String>) -> Result<EventFilter, String> {
        if patterns.is_empty() {
            return Err("must list at least one event type, such as `order.*` or `*`".into());
        }
        for pattern in &patterns {
            if !known_event_types().any(|name| pattern_matches(pattern, name)) {
                return Err(format!(
                    "`{pattern}` matches no event type; use names such as `order.created`, \
                     families such as `order.*`, or `*`"
                ));
            }
        }
        Ok(EventFilter(patterns))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.0.iter().any(|p| pattern_matches(p, event_type))
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(family) => event_type
            .strip_prefix(family)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == event_type,
    }
}

pub fn known_event_types() -> impl Iterator<Item = &'static str> {
    OrderEvent::NAMES
        .iter()
        .chain(InventoryEvent::NAMES)
        .chain(CustomerEvent::NAMES)
        .copied()
}

/// A NATS subject without wildcards: tokens of letters, digits, `_` and `-`, joined by
/// dots.
pub fn is_subject(raw: &str) -> bool {
    raw.len() <= 200
        && raw.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// A webhook URL: absolute http(s), no credentials in it, no control character (the URL
/// parser would silently drop a tab or a newline, and escape the others).
pub fn parse_webhook_url(raw: &str) -> Result<reqwest::Url, String> {
    crate::domain::values::check_line(raw).map_err(|e| e.to_string())?;
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; receivers verify the signature instead".into());
    }
    Ok(url)
}

/// A Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub fn generate() -> Secret {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Secret(format!("whsec_{}", BASE64.encode(key)))
    }

    pub fn from_stored(raw: String) -> Secret {
        Secret(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the base64 after the prefix.
    pub fn key(&self) -> Vec<u8> {
        let encoded = self.0.strip_prefix("whsec_").unwrap_or(&self.0);
        BASE64
            .decode(encoded)
            .unwrap_or_else(|_| encoded.as_bytes().to_vec())
    }
}

/// A stored secret that this server cannot open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place} could not be opened: {error}")]
pub struct Unopened {
    /// Where it is stored: `subscriptions.secret:<id>`.
    pub place: String,
    pub error: SealError,
}

/// One subscription as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: Uuid,
    pub kind: Kind,
    /// The webhook URL, or the NATS subject prefix.
    pub target: String,
    pub event_types: EventFilter,
    pub description: Option<String>,
    pub max_in_flight: u32,
    pub state: State,
    pub state_reason: Option<String>,
    pub secret: Option<Secret>,
    pub previous_secret: Option<(Secret, DateTime<Utc>)>,
    /// Why the stored secrets could not be opened (this server lacks their key, or the
    /// stored text was altered); `secret` and `previous_secret` are then `None`, and
    /// the subscription is not delivered until it is fixed.
    pub secret_error: Option<Unopened>,
    pub cursor: Cursor,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// The secrets that sign a request now: the current one, and during an overlap the
    /// one it replaced.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<Secret> {
        let previous = self
            .previous_secret
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(secret, _)| secret.clone());
        self.secret.iter().cloned().chain(previous).collect()
    }
}

/// How many messages of one subscription may be in flight at once, unless it says.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
pub const MAX_IN_FLIGHT_LIMIT: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> Result<EventFilter, String> {
        EventFilter::parse(patterns.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn families_exact_names_and_star_match_what_they_say() {
        let f = filter(&["order.*", "payment.captured"]).unwrap();
        assert!(f.matches("order.created"));
        assert!(f.matches("payment.captured"));
        assert!(!f.matches("payment.failed"));
        assert!(!f.matches("orders.created"));
        assert!(filter(&["*"]).unwrap().matches("inventory.reserved"));
    }

    #[test]
    fn a_pattern_that_matches_no_event_type_is_refused() {
        assert!(filter(&["order.craeted"]).is_err());
        assert!(filter(&["orders.*"]).is_err());
        assert!(filter(&[]).is_err());
    }

    #[test]
    fn subjects_are_dotted_tokens_without_wildcards() {
        assert!(is_subject("orderlog"));
        assert!(is_subject("shop-1.events"));
        assert!(!is_subject("orders.>"));
        assert!(!is_subject("orders.*"));
        assert!(!is_subject("a..b"));
        assert!(!is_subject(""));
    }

    #[test]
    fn webhook_urls_are_absolute_http_without_credentials() {
        assert!(parse_webhook_url("http://127.0.0.1:9000/hooks").is_ok());
        assert!(parse_webhook_url("ftp://example.com").is_err());
        assert!(parse_webhook_url("https://user:pw@example.com").is_err());
        assert!(parse_webhook_url("/relative").is_err());
    }

    #[test]
    fn a_secret_is_whsec_and_32_bytes_of_key() {
        let secret = Secret::generate();
        assert!(secret.as_str().starts_with("whsec_"));
        assert_eq!(secret.key().len(), 32);
        assert_ne!(secret, Secret::generate());
    }

    #[test]
    fn the_catalogue_lists_every_event_type_once() {
        let names: Vec<_> = known_event_types().collect();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(names.len(), unique.len());
        assert_eq!(names.len(), 20);
    }
}
