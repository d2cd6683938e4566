//! The customer's personal data as platforms send it, read leniently: a field our rules
//! refuse (an email without a domain, an address without a country code) is left out
//! of the order rather than failing it. The platform validated it for its own purpose;
//! the webhook as received stays in the inbox until the customer is erased.

use crate::domain::values::{CountryCode, Email, FreeText, Phone, ShippingAddress};

/// The parts of an address as a platform names them.
pub(crate) struct AddressParts<'a> {
    pub name: Option<String>,
    pub line1: Option<&'a str>,
    pub line2: Option<&'a str>,
    pub city: Option<&'a str>,
    pub region: Option<&'a str>,
    pub postal_code: Option<&'a str>,
    pub country: Option<&'a str>,
}

fn filled(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|r| !r.is_empty())
}

impl AddressParts<'_> {
    /// The address, when it has a name, a first line, a city and a country code.
    pub(crate) fn address(&self) -> Option<ShippingAddress> {
        let free = |raw: Option<&str>| filled(raw).and_then(|r| FreeText::parse(r).ok());
        Some(ShippingAddress {
            name: free(self.name.as_deref())?,
            line1: free(self.line1)?,
            line2: free(self.line2),
            city: free(self.city)?,
            region: free(self.region),
            // Some countries have none; the address is still one.
            postal_code: free(self.postal_code)
                .unwrap_or_else(|| FreeText::parse("").expect("empty text")),
            country: CountryCode::parse(filled(self.country)?).ok()?,
        })
    }
}

/// A first and a last name as one, when either is there.
pub(crate) fn full_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = [first, last].into_iter().filter_map(filled).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

pub(crate) fn email(raw: Option<&str>) -> Option<Email> {
    filled(raw).and_then(|r| Email::parse(r).ok())
}

pub(crate) fn phone(raw: Option<&str>) -> Option<Phone> {
    filled(raw).and_then(|r| Phone::parse(r).ok())
}

pub(crate) fn note(raw: Option<&str>) -> Option<FreeText> {
    filled(raw).and_then(|r| FreeText::parse(r).ok())
}
