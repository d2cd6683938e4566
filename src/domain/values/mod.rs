//! Typed values that every command and event is made of.
//!
//! Raw input becomes one of these at the edge, through `parse`, and nothing past the
//! edge ever holds an unchecked string or a float amount. Each value serialises to its
//! plain form (a string or an integer), so stored events stay readable by any consumer.
//! This module never does I/O and never knows which field a value came from: the API
//! names the field when it reports a [`ValueError`].
//!
//! Text from a client is clean here, once for every field: no value holds a control
//! character (NUL, escape, DEL, the C1 controls…), except that free text ([`Text`],
//! [`FreeText`]) may hold tabs and newlines; ids and SKUs are never `.`, `..` or hold a
//! `/`. These rules are for input. What the log already holds is read as written
//! ([`reading_stored`]), since a reader cannot refuse a fact that is already recorded.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a raw value was refused. The API pairs it with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("may contain only letters, digits and {allowed}")]
    InvalidCharacters { allowed: &'static str },
    #[error("must be greater than zero")]
    NotPositive,
    #[error("must not be negative")]
    Negative,
    #[error("must be at most {max}")]
    TooLarge { max: i64 },
    #[error("`{0}` is not an ISO 4217 currency code in circulation")]
    UnknownCurrency(String),
    #[error("`{0}` is not an ISO 3166-1 alpha-2 country code")]
    InvalidCountry(String),
    #[error("must not contain control characters (found U+{:04X})", u32::from(*.0))]
    ControlCharacter(char),
    #[error("must not be `.` or `..`")]
    DotSegment,
    #[error("may contain only lowercase letters, digits and `-`")]
    NotSlug,
    #[error("is not an email address (one `@` between a local part and a domain, no spaces, at most 254 characters)")]
    NotEmail,
    #[error("is not a phone number (4 to 32 characters: digits, spaces and `+ - ( ) .`, with at least 4 digits)")]
    NotPhone,
}

/// Checks a one-line text from a client (a query value, a path segment, a decoded
/// cursor): it holds no control character at all.
pub fn check_line(raw: &str) -> Result<(), ValueError> {
    check_controls(raw, false)
}

/// Refuses every control character (Unicode's `Cc`: U+0000 to U+001F, U+007F to
/// U+009F), but a tab or a newline (LF, or CR LF) in free text.
fn check_controls(raw: &str, free_text: bool) -> Result<(), ValueError> {
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_control() {
            continue;
        }
        let allowed =
            free_text && (c == '\t' || c == '\n' || (c == '\r' && chars.peek() == Some(&'\n')));
        if !allowed {
            return Err(ValueError::ControlCharacter(c));
        }
    }
    Ok(())
}

thread_local! {
    /// Set while a stored event is decoded: see [`reading_stored`].
    static READING_STORED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `decode` reading what the log already holds: the text values it deserialises
/// (ids, SKUs, free text, country codes) are taken as written, without their rules.
///
/// Those rules are for a client's input, and refused there. An event in the log is a
/// fact, written before a rule existed or by another writer; a reader that refused it
/// would stop at it forever (a projection, a rebuild, an aggregate that no longer
/// loads). Only a NUL is not kept: PostgreSQL's text cannot hold one, so readers hold
/// U+FFFD in its place, as the views they write do (`store::views`); the log itself,
/// and what deliveries send of it, keep the event as recorded.
///
/// serde gives a `Deserialize` no context of its own, so this is a flag on the thread,
/// set for the span of one synchronous decode (`domain::tagged`, the one way events
/// are read) and restored after it, even when it panics.
pub fn reading_stored<T>(decode: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            READING_STORED.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(READING_STORED.with(|flag| flag.replace(true)));
    decode()
}

fn is_reading_stored() -> bool {
    READING_STORED.with(Cell::get)
}

/// `Deserialize` for a text value with a `parse`: the rules for input, or the text as
/// stored while [`reading_stored`].
macro_rules! text_from_stored_or_parsed {
    ($name:ty) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                if is_reading_stored() {
                    return Ok(Self(as_stored(raw)));
                }
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Text as a reader of the log holds it: as written, with U+FFFD for each NUL.
fn as_stored(raw: String) -> String {
    if raw.contains('\0') {
        raw.replace('\0', "\u{fffd}")
    } else {
        raw
    }
}

/// Checks an identifier: 1 to `max` characters from ASCII letters, digits and `extra`,
/// and never `.` or `..` (a path segment that means another resource). Identifiers end
/// up in URLs, log lines and NATS subjects, so the alphabet is narrow: it holds no
/// control character and no `/`.
fn check_identifier(raw: &str, max: usize, extra: &'static str) -> Result<(), ValueError> {
    if raw.is_empty() {
        return Err(ValueError::Empty);
    }
    if raw == "." || raw == ".." {
        return Err(ValueError::DotSegment);
    }
    // Every allowed character is ASCII, so a valid id's length in bytes is its length in
    // characters; an invalid one is measured in characters, to name the right error.
    let allowed = raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b));
    let too_long = if allowed {
        raw.len() > max
    } else {
        raw.chars().count() > max
    };
    if too_long {
        return Err(ValueError::TooLong { max });
    }
    if !allowed {
        return Err(ValueError::InvalidCharacters {
            allowed: match extra {
                "-_" => "`-` or `_`",
                "-_." => "`-`, `_` or `.`",
                _ => extra,
            },
        });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, extra = $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(raw: &str) -> Result<Self, ValueError> {
                check_identifier(raw, $max, $extra)?;
                Ok(Self(raw.to_owned()))
            }

            /// An id a reader took from the log (a view row built from events): as
            /// written, like an event's ([`reading_stored`]).
            pub fn from_stored(raw: &str) -> Self {
                Self(as_stored(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // The same check as `parse`, keeping the string serde already made.
                let raw = String::deserialize(d)?;
                if is_reading_stored() {
                    return Ok(Self(as_stored(raw)));
                }
                check_identifier(&raw, $max, $extra).map_err(serde::de::Error::custom)?;
                Ok(Self(raw))
            }
        }
    };
}

identifier!(
    /// An order's id: the storefront's own, or one we generate.
    OrderId, max = 64, extra = "-_"
);
identifier!(
    /// The storefront's customer id.
    CustomerId, max = 64, extra = "-_"
);
identifier!(
    /// A stock keeping unit. Dots are common in SKUs (`TSHIRT.RED.M`).
    Sku, max = 64, extra = "-_."
);
identifier!(
    /// A payment attempt's id, unique within its order.
    PaymentId, max = 64, extra = "-_"
);
identifier!(
    /// A shipment's id, unique within its order.
    ShipmentId, max = 64, extra = "-_"
);
identifier!(
    /// A refund's id, unique within its order.
    RefundId, max = 64, extra = "-_"
);

impl OrderId {
    /// A fresh id. UUIDv7 sorts by creation time, which keeps indexes and listings tidy.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl PaymentId {
    pub fn generate() -> Self {
        Self(format!("pay_{}", uuid::Uuid::now_v7().simple()))
    }
}

impl ShipmentId {
    pub fn generate() -> Self {
        Self(format!("shp_{}", uuid::Uuid::now_v7().simple()))
    }
}

impl RefundId {
    pub fn generate() -> Self {
        Self(format!("ref_{}", uuid::Uuid::now_v7().simple()))
    }
}

/// A storefront source's name, as it appears in its ingest URL and in the ids of its
/// orders (`myshop-820982911946154508`): 1 to 40 lowercase letters, digits and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SourceName(String);

impl SourceName {
    pub const MAX_LEN: usize = 40;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.is_empty() {
            return Err(ValueError::Empty);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ValueError::NotSlug);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(ValueError::TooLong { max: Self::MAX_LEN });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_from_stored_or_parsed!(SourceName);

/// A count of units: at least one, and bounded so that totals cannot overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1_000_000;

    pub fn parse(raw: i64) -> Result<Self, ValueError> {
        if raw <= 0 {
            return Err(ValueError::NotPositive);
        }
        if raw > i64::from(Self::MAX) {
            return Err(ValueError::TooLarge {
                max: i64::from(Self::MAX),
            });
        }
        Ok(Self(raw as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A strictly positive amount in minor units whose currency is implied by its context, as
/// in a payment or a refund, which are always in the order's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MinorUnits(i64);

impl MinorUnits {
    pub fn parse(raw: i64) -> Result<Self, ValueError> {
        if raw <= 0 {
            return Err(ValueError::NotPositive);
        }
        if raw > Money::MAX_AMOUNT {
            return Err(ValueError::TooLarge {
                max: Money::MAX_AMOUNT,
            });
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn in_currency(self, currency: Currency) -> Money {
        Money {
            amount: self.0,
            currency,
        }
    }
}

impl<'de> Deserialize<'de> for MinorUnits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An ISO 4217 currency in circulation. Funds, precious metals and test codes are refused:
/// nobody checks out in troy ounces of gold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        accepted_currency(raw)
            .map(Self)
            .ok_or_else(|| ValueError::UnknownCurrency(raw.to_owned()))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }
}

/// The accepted currency with this code, if any. Every amount of every event carries a
/// code, and iso_currency finds one by comparing it with each code in turn, then answers
/// each question below the same way: so the answers for all 17,576 three-letter codes
/// are worked out once, and a lookup is an index.
fn accepted_currency(raw: &str) -> Option<iso_currency::Currency> {
    static BY_CODE: std::sync::OnceLock<Vec<Option<iso_currency::Currency>>> =
        std::sync::OnceLock::new();
    fn index(code: &[u8]) -> Option<usize> {
        let &[a, b, c] = code else { return None };
        [a, b, c].iter().try_fold(0, |i, &letter| {
            letter
                .is_ascii_uppercase()
                .then(|| i * 26 + usize::from(letter - b'A'))
        })
    }
    let table = BY_CODE.get_or_init(|| {
        let letters = b'A'..=b'Z';
        let mut table = vec![None; 26 * 26 * 26];
        for a in letters.clone() {
            for b in letters.clone() {
                for c in letters.clone() {
                    let code = [a, b, c];
                    let text = std::str::from_utf8(&code).unwrap_or_default();
                    table[index(&code).unwrap_or_default()] =
                        iso_currency::Currency::from_code(text)
                            .filter(|c| c.exponent().is_some() && !c.is_fund() && !c.is_special())
                            .filter(|c| c.is_superseded().is_none());
                }
            }
        }
        table
    });
    table[index(raw.as_bytes())?]
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Every amount carries its currency: read the code without allocating it.
        struct Code;
        impl serde::de::Visitor<'_> for Code {
            type Value = Currency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<Currency, E> {
                Currency::parse(raw).map_err(E::custom)
            }
        }
        d.deserialize_str(Code)
    }
}

/// An amount in a currency's minor units (cents for USD, yen for JPY). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawMoney")]
pub struct Money {
    amount: i64,
    currency: Currency,
}

impl Money {
    /// The largest amount accepted anywhere: 10^15 minor units, far beyond any real order,
    /// and far enough from `i64::MAX` that sums of many amounts cannot overflow.
    pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

    /// A non-negative amount (prices may be zero: free samples exist).
    pub fn parse(amount: i64, currency: Currency) -> Result<Self, ValueError> {
        if amount < 0 {
            return Err(ValueError::Negative);
        }
        if amount > Self::MAX_AMOUNT {
            return Err(ValueError::TooLarge {
                max: Self::MAX_AMOUNT,
            });
        }
        Ok(Self { amount, currency })
    }

    /// A strictly positive amount, as payments and refunds must be.
    pub fn parse_positive(amount: i64, currency: Currency) -> Result<Self, ValueError> {
        if amount <= 0 {
            return Err(ValueError::NotPositive);
        }
        Self::parse(amount, currency)
    }

    pub fn zero(currency: Currency) -> Self {
        Self {
            amount: 0,
            currency,
        }
    }

    pub fn amount(self) -> i64 {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_zero(self) -> bool {
        self.amount == 0
    }

    /// `None` when the currencies differ or the sum leaves the accepted range.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        let amount = self.amount.checked_add(other.amount)?;
        (amount <= Self::MAX_AMOUNT).then_some(Money { amount, ..self })
    }

    /// `None` when the currencies differ or the result would be negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        if self.currency != other.currency || other.amount > self.amount {
            return None;
        }
        Some(Money {
            amount: self.amount - other.amount,
            ..self
        })
    }

    pub fn checked_mul(self, quantity: Quantity) -> Option<Money> {
        let amount = self.amount.checked_mul(i64::from(quantity.get()))?;
        (amount <= Self::MAX_AMOUNT).then_some(Money { amount, ..self })
    }
}

#[derive(Deserialize)]
struct RawMoney {
    amount: i64,
    currency: Currency,
}

impl TryFrom<RawMoney> for Money {
    type Error = ValueError;

    fn try_from(raw: RawMoney) -> Result<Self, Self::Error> {
        Money::parse(raw.amount, raw.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (minor units)", self.amount, self.currency)
    }
}

/// Where an order goes. Only the country is structured: address formats vary too much
/// across countries for more rules to help rather than hurt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingAddress {
    pub name: FreeText,
    pub line1: FreeText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<FreeText>,
    pub city: FreeText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<FreeText>,
    pub postal_code: FreeText,
    pub country: CountryCode,
}

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CountryCode(String);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.len() == 2 && raw.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValueError::InvalidCountry(raw.to_owned()))
        }
    }
}

text_from_stored_or_parsed!(CountryCode);

/// An email address, as far as an order engine needs to judge one: one `@` with text on
/// both sides, a dot in the domain, no whitespace or control character. Whether it
/// receives mail is the storefront's business. Personal data (`domain::personal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// RFC 5321's limit on a forward path.
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let raw = raw.trim();
        let well_formed = raw.len() <= Self::MAX_LEN
            && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
            && raw.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValueError::NotEmail)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_from_stored_or_parsed!(Email);

/// A phone number as a person wrote it (`+44 20 7946 0958`, `(555) 010-0199`).
/// Personal data (`domain::personal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let raw = raw.trim();
        let allowed = raw
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c));
        let digits = raw.chars().filter(char::is_ascii_digit).count();
        if allowed && (4..=32).contains(&raw.len()) && digits >= 4 {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValueError::NotPhone)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_from_stored_or_parsed!(Phone);

/// Free text a person wrote (a cancellation reason, a carrier name): trimmed, non-empty
/// and bounded, so that no single event can carry a novel. It holds no control
/// character but tabs and newlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    pub const MAX_LEN: usize = 500;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValueError::Empty);
        }
        if trimmed.chars().count() > Self::MAX_LEN {
            return Err(ValueError::TooLong { max: Self::MAX_LEN });
        }
        check_controls(trimmed, true)?;
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_from_stored_or_parsed!(Text);

/// Free text that may be empty, kept as written (an address line, a subscription's
/// description): at most [`FreeText::MAX_LEN`] characters, and no control character but
/// tabs and newlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FreeText(String);

impl FreeText {
    pub const MAX_LEN: usize = 500;

    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.chars().count() > Self::MAX_LEN {
            return Err(ValueError::TooLong { max: Self::MAX_LEN });
        }
        check_controls(raw, true)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

text_from_stored_or_parsed!(FreeText);

/// Event times as serde reads them, for `#[serde(deserialize_with = "utc::deserialize")]`.
///
/// chrono writes a `DateTime<Utc>` in one form, `2026-11-21T09:05:07.123Z`, but reads
/// through a general RFC 3339 parser that was a tenth of a rebuild's decoding. That one
/// form is read here by hand; anything else goes to chrono's parser, so what is accepted,
/// and as what, does not change.
pub mod utc {
    use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        struct Time;
        impl serde::de::Visitor<'_> for Time {
            type Value = DateTime<Utc>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 date and time")
            }
            fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<DateTime<Utc>, E> {
                match zulu(raw) {
                    Some(t) => Ok(t),
                    None => raw
                        .parse::<DateTime<FixedOffset>>()
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(E::custom),
                }
            }
        }
        d.deserialize_str(Time)
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, or `None` for anything else (leap seconds too).
    pub(super) fn zulu(raw: &str) -> Option<DateTime<Utc>> {
        let b = raw.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[b.len() - 1] != b'Z'
        {
            return None;
        }
        let number = |digits: &[u8]| {
            digits.iter().try_fold(0u32, |n, &d| {
                d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
            })
        };
        let nanos = match &b[19..b.len() - 1] {
            [] => 0,
            [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
                number(digits)? * 10u32.pow(9 - digits.len() as u32)
            }
            _ => return None,
        };
        let second = number(&b[17..19])?;
        if second > 59 {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(
            i32::try_from(number(&b[0..4])?).ok()?,
            number(&b[5..7])?,
            number(&b[8..10])?,
        )?;
        let time =
            NaiveTime::from_hms_nano_opt(number(&b[11..13])?, number(&b[14..16])?, second, nanos)?;
        Some(date.and_time(time).and_utc())
    }
}

#[cfg(test)]
mod tests;
