//! Upcasters: how an event stored at an older version of its shape reads as today's.
//!
//! The log is never rewritten. A reader meets each event as stored, and every reader
//! (an aggregate's load, projections and their rebuilds, deliveries, the live stream, the
//! API's event history) brings it to the current version through [`upcast`] before
//! decoding it, so that only one shape per event type is ever decoded. What a receiver of
//! deliveries gets is thus the current version too, with its `event_version`: one shape
//! per type to handle, whenever the event was written.
//!
//! Adding a version: bump the event's version where it is written (`OrderEvent::version`)
//! and add one step to [`STEPS`] from the version before. Steps chain: an event two
//! versions behind takes both, in order.

use serde_json::{json, Map, Value};

/// One step of one event type's shape, from version `from` to version `to`.
pub struct Step {
    pub event_type: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub apply: fn(&mut Map<String, Value>),
}

/// Every step there is, each after the step it follows.
pub const STEPS: &[Step] = &[
    Step {
        event_type: "order.created",
        from: "1.0",
        to: "1.1",
        apply: order_created_1_1,
    },
    Step {
        event_type: "order.created",
        from: "1.1",
        to: "1.2",
        apply: order_created_1_2,
    },
];

/// 1.1 added the charges: an order of 1.0 had none, and its total was its lines' sum.
fn order_created_1_1(payload: &mut Map<String, Value>) {
    let subtotal = payload.get("total").cloned().unwrap_or(Value::Null);
    payload.insert("subtotal".into(), subtotal);
    for list in ["discounts", "shipping_lines", "tax_lines"] {
        payload.insert(list.into(), json!([]));
    }
}

/// 1.2 seals the personal data into `personal`. A 1.1 order held its shipping address in
/// the clear: it moves there as it is, legacy clear data (`domain::personal::Personal`).
fn order_created_1_2(payload: &mut Map<String, Value>) {
    if let Some(address) = payload.remove("shipping_address") {
        payload.insert(
            crate::domain::personal::SEALED_FIELD.into(),
            json!({ "shipping_address": address }),
        );
    }
}

/// The first step for an event of `event_type` stored at `version`, if it is behind.
fn step(event_type: &str, version: &str) -> Option<&'static Step> {
    STEPS
        .iter()
        .find(|s| s.event_type == event_type && s.from == version)
}

/// An event's payload at the current version of its type, and that version; `None` when
/// it is current already (the common case, which costs one scan of [`STEPS`]).
pub fn upcast(
    event_type: &str,
    version: &str,
    payload: &str,
) -> Option<Result<(&'static str, String), UpcastError>> {
    let first = step(event_type, version)?;
    Some(apply_from(first, payload))
}

fn apply_from(first: &'static Step, payload: &str) -> Result<(&'static str, String), UpcastError> {
    let mut value: Value = serde_json::from_str(payload).map_err(|e| UpcastError(e.to_string()))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(UpcastError("the payload is not a JSON object".into()));
    };
    let mut at = first;
    loop {
        (at.apply)(fields);
        match step(at.event_type, at.to) {
            Some(next) => at = next,
            None => break,
        }
    }
    Ok((at.to, value.to_string()))
}

/// A stored payload an upcaster could not read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the stored payload cannot be upcast: {0}")]
pub struct UpcastError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_current_event_is_left_alone() {
        assert!(upcast("order.created", "1.2", "{}").is_none());
        assert!(upcast("payment.captured", "1.0", "{}").is_none());
    }

    #[test]
    fn an_order_created_1_0_reads_as_an_order_without_charges() {
        let stored =
            r#"{"type":"order.created","order_id":"o-1","total":{"amount":500,"currency":"EUR"}}"#;
        let (version, payload) = upcast("order.created", "1.0", stored).unwrap().unwrap();
        assert_eq!(version, "1.2");
        let read: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(read["subtotal"], json!({"amount": 500, "currency": "EUR"}));
        assert_eq!(read["total"], read["subtotal"]);
        assert_eq!(read["discounts"], json!([]));
        assert_eq!(read["shipping_lines"], json!([]));
        assert_eq!(read["tax_lines"], json!([]));
        assert_eq!(read["type"], "order.created");
    }

    #[test]
    fn an_order_created_1_1_keeps_its_clear_address_as_legacy_personal_data() {
        let stored =
            r#"{"type":"order.created","order_id":"o-1","shipping_address":{"name":"Ada"}}"#;
        let (version, payload) = upcast("order.created", "1.1", stored).unwrap().unwrap();
        assert_eq!(version, "1.2");
        let read: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(
            read["personal"],
            json!({"shipping_address": {"name": "Ada"}})
        );
        assert!(read.get("shipping_address").is_none());
        let without = r#"{"type":"order.created","order_id":"o-2"}"#;
        let (_, payload) = upcast("order.created", "1.1", without).unwrap().unwrap();
        assert!(!payload.contains("personal"));
    }

    #[test]
    fn every_step_leads_somewhere_and_no_version_has_two() {
        for s in STEPS {
            assert_ne!(s.from, s.to, "{}", s.event_type);
            let same = STEPS
                .iter()
                .filter(|o| o.event_type == s.event_type && o.from == s.from)
                .count();
            assert_eq!(same, 1, "{} {} has one step", s.event_type, s.from);
        }
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_an_error_not_a_panic() {
        assert!(upcast("order.created", "1.0", "[1]").unwrap().is_err());
        assert!(upcast("order.created", "1.0", "not json").unwrap().is_err());
    }
}
