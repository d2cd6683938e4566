//! A customer's personal data: what it is ([`FIELDS`], the one list of it), and how the
//! log holds it ([`Personal`]).
//!
//! Personal data is what identifies a person: the shipping and billing addresses (with
//! the names on them), the email address, the phone number and any note the customer
//! wrote. The `customer_id` is not: it is the storefront's pseudonym, and stays.
//!
//! The log never holds personal data in the clear. The edge seals it under a data key of
//! the customer's (`store::vault`) before a command is made, so commands, events and
//! aggregates carry only the sealed text, and nothing downstream can leak it into a log
//! line or a trace. Readers that show it open it through the vault; once the customer
//! is erased (the data keys destroyed, `customer.erased` appended), nothing opens, and
//! every reader shows the fields as `null` with `"erased": true`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::values::{Email, FreeText, Phone, ShippingAddress};

/// Every personal field an object of the log or the API may hold, in the order readers
/// show them. The export, the vault and the erasure all go by this list.
pub const FIELDS: &[&str] = &[
    "shipping_address",
    "billing_address",
    "email",
    "phone",
    "note",
];

/// The name of the field that holds an object's sealed personal data, in stored events
/// and in kept answers: its place in every object is where the [`FIELDS`] appear when
/// it is opened.
pub const SEALED_FIELD: &str = "personal";

/// Personal data in the clear. It lives only in memory, between the edge that parses it
/// and the vault that seals it (or a reader that has just opened it); `Debug` never
/// shows it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonalData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<ShippingAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<ShippingAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// What the customer wrote at checkout ("leave it with the neighbour").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<FreeText>,
}

impl fmt::Debug for PersonalData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalData(redacted)")
    }
}

impl PersonalData {
    pub fn is_empty(&self) -> bool {
        *self == PersonalData::default()
    }
}

/// An order's personal data as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Personal {
    /// Sealed under one of the customer's data keys: `sealed:v1:<data key id>:<base64>`
    /// (`store::sealed`'s form). Everything written since `order.created` 1.2.
    Sealed(SealedPersonal),
    /// In the clear, as `order.created` 1.1 and earlier held a shipping address. Read as
    /// it was written: the log is never rewritten, so erasure cannot shred these.
    Clear(Box<PersonalData>),
}

impl<'de> Deserialize<'de> for Personal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Sealed(String),
            Clear(Box<PersonalData>),
        }
        Ok(match Stored::deserialize(d)? {
            Stored::Sealed(text) => Personal::Sealed(SealedPersonal(text)),
            Stored::Clear(data) => Personal::Clear(data),
        })
    }
}

/// Sealed personal data: opaque here, opened only by `store::vault`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SealedPersonal(String);

impl SealedPersonal {
    /// Wraps what the vault sealed.
    pub fn new(sealed: String) -> Self {
        Self(sealed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_form_never_shows_the_data() {
        let data = PersonalData {
            email: Some(Email::parse("ada@example.com").unwrap()),
            ..PersonalData::default()
        };
        assert_eq!(format!("{data:?}"), "PersonalData(redacted)");
        assert!(!data.is_empty());
        assert!(PersonalData::default().is_empty());
    }

    #[test]
    fn sealed_text_and_legacy_objects_both_read() {
        let sealed: Personal = serde_json::from_str(r#""sealed:v1:00:AA""#).unwrap();
        assert!(matches!(sealed, Personal::Sealed(s) if s.as_str() == "sealed:v1:00:AA"));
        let clear: Personal = serde_json::from_str(r#"{"email":"ada@example.com"}"#).unwrap();
        let Personal::Clear(data) = clear else {
            panic!("a legacy object reads in the clear")
        };
        assert_eq!(data.email.unwrap().as_str(), "ada@example.com");
    }
}
