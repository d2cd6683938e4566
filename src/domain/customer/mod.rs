//! A customer, as far as the log needs one: the erasure of their personal data.
//!
//! Orders name their customer by `customer_id`, the storefront's pseudonym; the
//! customer's personal data lives sealed in those orders (`domain::personal`). Erasing
//! it appends `customer.erased` to this aggregate, in the same commit that destroys the
//! customer's data keys (`store::vault`): the fact that it happened, who asked, and
//! when, with no personal data in it. Every reader shows the data as erased from then on;
//! subscribers receive the event, to erase their own copies.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::tagged;
use super::values::{utc, CustomerId, Text};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    Erase(Erase),
}

/// Erase the customer's personal data: always accepted, and repeated erasures each
/// destroy whatever keys the customer has gained since the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erase {
    pub customer_id: CustomerId,
    /// The API token (or operator) that asked.
    pub requested_by: Text,
    /// Whom they asked for (`X-Actor`), as they claim.
    pub on_behalf_of: Option<Text>,
    /// Why, as the operator puts it ("GDPR request #4411"). No personal data here.
    pub reason: Option<Text>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Stored as `{"type": <name>, <fields>…}`, through `domain::tagged`.
#[serde(remote = "Self")]
pub enum CustomerEvent {
    /// Emitted when a customer's data keys are destroyed: their personal data in the
    /// log can no longer be read. The stored name is a contract, like every event's.
    #[serde(rename = "customer.erased")]
    CustomerErased {
        customer_id: CustomerId,
        requested_by: Text,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_behalf_of: Option<Text>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Text>,
        #[serde(deserialize_with = "utc::deserialize")]
        erased_at: DateTime<Utc>,
    },
}

tagged::stored_form!(CustomerEvent);

impl CustomerEvent {
    /// Every stored name.
    pub const NAMES: &'static [&'static str] = &["customer.erased"];

    pub fn name(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerErased { .. } => "customer.erased",
        }
    }
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// A customer's erasures could not go wrong: there is no rule to break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {}

/// One erasure, as its receipt shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// The aggregate's sequence of its `customer.erased`: the receipt's number.
    pub sequence: usize,
    pub requested_by: Text,
    pub on_behalf_of: Option<Text>,
    pub reason: Option<Text>,
    pub erased_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    version: usize,
    erasures: Vec<Erasure>,
}

impl Customer {
    pub fn version(&self) -> usize {
        self.version
    }

    /// Every erasure, oldest first.
    pub fn erasures(&self) -> &[Erasure] {
        &self.erasures
    }

    pub fn decide(&self, command: CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerError> {
        match command {
            CustomerCommand::Erase(erase) => Ok(vec![CustomerEvent::CustomerErased {
                customer_id: erase.customer_id,
                requested_by: erase.requested_by,
                on_behalf_of: erase.on_behalf_of,
                reason: erase.reason,
                erased_at: erase.at,
            }]),
        }
    }

    pub fn evolve(&mut self, event: CustomerEvent) {
        self.version += 1;
        match event {
            CustomerEvent::CustomerErased {
                requested_by,
                on_behalf_of,
                reason,
                erased_at,
                ..
            } => self.erasures.push(Erasure {
                sequence: self.version,
                requested_by,
                on_behalf_of,
                reason,
                erased_at,
            }),
        }
    }
}

impl Aggregate for Customer {
    const TYPE: &'static str = "customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.evolve(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erase(reason: Option<&str>) -> CustomerCommand {
        CustomerCommand::Erase(Erase {
            customer_id: CustomerId::parse("c-1").unwrap(),
            requested_by: Text::parse("dpo").unwrap(),
            on_behalf_of: None,
            reason: reason.map(|r| Text::parse(r).unwrap()),
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        })
    }

    #[test]
    fn given_no_history_when_erased_then_customer_erased_with_who_and_when() {
        let events = Customer::default().decide(erase(Some("GDPR #1"))).unwrap();
        let [CustomerEvent::CustomerErased {
            requested_by,
            reason,
            erased_at,
            ..
        }] = events.as_slice()
        else {
            panic!("one customer.erased")
        };
        assert_eq!(requested_by.as_str(), "dpo");
        assert_eq!(reason.as_ref().unwrap().as_str(), "GDPR #1");
        assert_eq!(erased_at.timestamp(), 1_800_000_000);
        let stored = serde_json::to_string(&events[0]).unwrap();
        assert!(stored.starts_with(r#"{"type":"customer.erased","customer_id":"c-1""#));
    }

    #[test]
    fn given_an_erasure_when_erased_again_then_a_second_receipt() {
        let mut customer = Customer::default();
        for event in customer.decide(erase(None)).unwrap() {
            customer.evolve(event);
        }
        for event in customer.decide(erase(None)).unwrap() {
            customer.evolve(event);
        }
        let sequences: Vec<usize> = customer.erasures().iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [1, 2]);
    }
}
