//! Where messages go: a webhook (Standard Webhooks: signed, with the event id as
//! `webhook-id`) or a NATS JetStream subject (with the event id as `Nats-Msg-Id`, so
//! the server dedupes). Each send is one attempt, judged here.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::OnceCell;
use tracing::Instrument;

use super::message::Message;
use super::subscription::{Kind, Secret, Subscription};
use super::target::TargetPolicy;

/// How much of a failed response (or of an error) an attempt record keeps.
pub const DETAIL_LIMIT: usize = 2048;

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another try, no sooner than `retry_after` when the receiver said so.
    Retry {
        retry_after: Option<Duration>,
    },
    /// The receiver answered 410: it wants no more.
    Gone,
}

impl Verdict {
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Retry { .. } => "failed",
            Verdict::Gone => "gone",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub latency: Duration,
    /// The HTTP status, when a response came back.
    pub status: Option<u16>,
    pub verdict: Verdict,
    /// The start of a failed response's body, or the error.
    pub detail: Option<String>,
    /// The receiver turned the request away without taking it: no connection, or a 429
    /// or 503 without `Retry-After`. A small receiver's pushback, not a failed delivery,
    /// and safe to send again at once (a timeout is not: the receiver may have it).
    pub turned_away: bool,
}

/// Standard Webhooks' signature header value: `v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">`, once per secret, separated by spaces.
pub fn sign(secrets: &[Secret], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|secret| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&secret.key())
                .expect("HMAC takes a key of any length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body.as_bytes());
            format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long opening a connection to a receiver may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The connections sinks share: one HTTP client (its pool keeps connections to each
/// receiver alive) and one NATS connection, opened when first needed.
pub struct Connections {
    pub http: reqwest::Client,
    /// The SSRF guard: inside `http`'s resolver for host names, and checked here before
    /// each request to an IP literal, which reqwest connects to without resolving.
    targets: TargetPolicy,
    nats_url: String,
    nats: OnceCell<async_nats::Client>,
}

impl Connections {
    pub fn new(nats_url: String, targets: TargetPolicy) -> Connections {
        let http = reqwest::Client::builder()
            // A webhook answers for itself: a redirect is a misconfiguration to fix,
            // not a hop to follow with a signed body (and a way around the guard).
            .redirect(reqwest::redirect::Policy::none())
            // A receiver whose listen backlog is full drops the connection attempt, and
            // the kernel would retry it for a minute: a second is a failed attempt, so
            // the window narrows instead of waiting.
            .connect_timeout(CONNECT_TIMEOUT)
            // Connect-time SSRF check: only the addresses the guard allows are dialled.
            .dns_resolver(targets.resolver())
            // Through a proxy the guard would judge the proxy's address, and the proxy
            // would resolve and reach the receiver unchecked: webhooks go direct.
            .no_proxy()
            .pool_max_idle_per_host(1024)
            .build()
            .expect("the HTTP client's settings are static");
        Connections {
            http,
            targets,
            nats_url,
            nats: OnceCell::new(),
        }
    }

    async fn nats(&self) -> Result<async_nats::Client, String> {
        self.nats
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    async_nats::connect(self.nats_url.as_str()),
                )
                .await
                .map_err(|_| format!("connecting to NATS at {} timed out", self.nats_url))?
                .map_err(|e| format!("connecting to NATS at {}: {e}", self.nats_url))
            })
            .await
            .cloned()
    }
}

/// One subscription's destination, built from its current settings.
pub enum Sink {
    Webhook {
        url: reqwest::Url,
        secrets: Vec<Secret>,
        timeout: Duration,
    },
    Nats {
        prefix: String,
        /// Set once the stream is known to exist.
        stream_ready: OnceCell<()>,
    },
}

impl Sink {
    pub fn of(subscription: &Subscription, timeout: Duration) -> Result<Sink, String> {
        Ok(match subscription.kind {
            Kind::Webhook => Sink::Webhook {
                url: super::subscription::parse_webhook_url(&subscription.target)?,
                secrets: subscription.signing_secrets(Utc::now()),
                timeout,
            },
            Kind::Nats => Sink::Nats {
                prefix: subscription.target.clone(),
                stream_ready: OnceCell::new(),
            },
        })
    }

    pub async fn send(&self, connections: &Connections, message: &Message) -> Attempt {
        // With traces exported, each attempt is a span parented by the traceparent
        // stored on the event, and the receiver is handed the attempt's context, so
        // that its spans are children of the attempt. With traces off, the stored
        // traceparent goes on unchanged.
        if crate::trace::enabled() {
            let span = tracing::info_span!(
                "delivery_attempt",
                sink = self.kind(),
                event_type = %message.event_type,
                event_id = %message.event_id,
                status = tracing::field::Empty,
                outcome = tracing::field::Empty,
            );
            crate::trace::set_parent_from(&span, message.traceparent.as_deref());
            let traceparent =
                crate::trace::traceparent_of(&span).or_else(|| message.traceparent.clone());
            let attempt = self
                .attempt(connections, message, traceparent.as_deref())
                .instrument(span.clone())
                .await;
            if let Some(status) = attempt.status {
                span.record("status", status);
            }
            span.record("outcome", attempt.verdict.outcome());
            return attempt;
        }
        self.attempt(connections, message, message.traceparent.as_deref())
            .await
    }

    fn kind(&self) -> &'static str {
        match self {
            Sink::Webhook { .. } => "webhook",
            Sink::Nats { .. } => "nats",
        }
    }

    /// One send, carrying `traceparent` to the receiver.
    async fn attempt(
        &self,
        connections: &Connections,
        message: &Message,
        traceparent: Option<&str>,
    ) -> Attempt {
        let at = Utc::now();
        let started = Instant::now();
        let (status, verdict, detail, unconnected) = match self {
            Sink::Webhook {
                url,
                secrets,
                timeout,
            } => webhook(connections, url, secrets, *timeout, message, traceparent).await,
            Sink::Nats {
                prefix,
                stream_ready,
            } => match nats(connections, prefix, stream_ready, message, traceparent).await {
                Ok(()) => (None, Verdict::Delivered, None, false),
                Err(e) => (
                    None,
                    Verdict::Retry { retry_after: None },
                    Some(truncate(e)),
                    false,
                ),
            },
        };
        let busy =
            matches!(status, Some(429 | 503)) && verdict == (Verdict::Retry { retry_after: None });
        Attempt {
            at,
            latency: started.elapsed(),
            status,
            verdict,
            detail,
            turned_away: unconnected || busy,
        }
    }
}

async fn webhook(
    connections: &Connections,
    url: &reqwest::Url,
    secrets: &[Secret],
    timeout: Duration,
    message: &Message,
    traceparent: Option<&str>,
) -> (Option<u16>, Verdict, Option<String>, bool) {
    // Judged on every send, not only at create time: the setting may have changed since
    // (a restart with private networks no longer allowed).
    if let Err(refused) = connections.targets.check_without_lookup(url) {
        return (
            None,
            Verdict::Retry { retry_after: None },
            Some(format!("not sent: the webhook url {refused}")),
            false,
        );
    }
    let id = message.event_id.to_string();
    let timestamp = Utc::now().timestamp();
    let mut request = connections
        .http
        .post(url.clone())
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign(secrets, &id, timestamp, &message.body),
        )
        .body(message.body.clone());
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            let what = if e.is_timeout() {
                format!("timed out after {timeout:?}")
            } else if e.is_connect() {
                format!("could not connect: {}", source_chain(&e))
            } else {
                format!("request failed: {}", source_chain(&e))
            };
            return (
                None,
                Verdict::Retry { retry_after: None },
                Some(what),
                e.is_connect(),
            );
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    // Read the body either way: it frees the connection for the next request.
    let body = response.bytes().await.unwrap_or_default();
    let verdict = if status.is_success() {
        Verdict::Delivered
    } else if status == reqwest::StatusCode::GONE {
        Verdict::Gone
    } else {
        // Every other answer, 4xx included, may be a receiver mid-deploy: retry on
        // schedule, and let the dead-letter queue catch what never succeeds.
        Verdict::Retry { retry_after }
    };
    let detail = if status.is_redirection() {
        // The body of a redirect says little; where it pointed is what to fix.
        Some(truncate(match location {
            Some(location) => {
                format!("redirected to {location}; redirects are not followed")
            }
            None => format!("answered {status} without a Location; redirects are not followed"),
        }))
    } else {
        (verdict != Verdict::Delivered)
            .then(|| truncate(String::from_utf8_lossy(&body).into_owned()))
    };
    (Some(status.as_u16()), verdict, detail, false)
}

async fn nats(
    connections: &Connections,
    prefix: &str,
    stream_ready: &OnceCell<()>,
    message: &Message,
    traceparent: Option<&str>,
) -> Result<(), String> {
    let client = connections.nats().await?;
    let jetstream = async_nats::jetstream::new(client);
    stream_ready
        .get_or_try_init(|| async {
            jetstream
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: stream_name(prefix),
                    subjects: vec![format!("{prefix}.>")],
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| format!("creating the JetStream stream for `{prefix}.>`: {e}"))
        })
        .await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        message.event_id.to_string().as_str(),
    );
    if let Some(traceparent) = traceparent {
        headers.insert("traceparent", traceparent);
    }
    let ack = jetstream
        .publish_with_headers(
            format!("{prefix}.{}", message.event_type),
            headers,
            message.body.clone().into(),
        )
        .await
        .map_err(|e| format!("publishing to NATS: {e}"))?;
    // The cursor moves only once the stream has the message.
    ack.await
        .map(drop)
        .map_err(|e| format!("waiting for the JetStream acknowledgement: {e}"))
}

/// The stream a prefix publishes into: `orderlog` → `ORDERLOG`, `shop-1.events` →
/// `SHOP_1_EVENTS`.
pub fn stream_name(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(raw: &str) -> Option<Duration> {
    if let Ok(seconds) = raw.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(raw.trim()).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn truncate(mut text: String) -> String {
    if text.len() > DETAIL_LIMIT {
        let mut end = DETAIL_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification.
        let secret = Secret::from_stored("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let signature = sign(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_sign_side_by_side() {
        let a = Secret::generate();
        let b = Secret::generate();
        let both = sign(&[a.clone(), b], "id", 1, "{}");
        let parts: Vec<_> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&[a], "id", 1, "{}"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let parsed = parse_retry_after(&later).unwrap();
        assert!(parsed > Duration::from_secs(80) && parsed <= Duration::from_secs(90));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn long_details_are_cut_at_2_kib_on_a_char_boundary() {
        let text = "é".repeat(3000);
        let cut = truncate(text);
        assert!(cut.len() <= DETAIL_LIMIT);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn stream_names_are_upper_case_tokens() {
        assert_eq!(stream_name("orderlog"), "ORDERLOG");
        assert_eq!(stream_name("shop-1.events"), "SHOP_1_EVENTS");
    }
}
