//! Amounts as the platforms write them, into minor units of a currency.
//!
//! Shopify and WooCommerce send money as decimal text in major units (`"199.65"`,
//! Woo's refunds as `"-10.00"`), and a few fields as JSON numbers. This module owns the
//! one rule for turning that text into an integer count of minor units: scale by the
//! currency's ISO 4217 exponent (JPY 0, USD 2, KWD 3) and refuse, never round, any digit
//! below the minor unit unless it is a zero. It never sees a float: a JSON number is read
//! through its text (see [`Amount`]).

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::domain::values::{Currency, Money};

/// Why an amount's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is empty")]
    Empty,
    #[error("has a sign out of place; only a leading `-` is allowed")]
    MisplacedSign,
    #[error("is written with an exponent; send plain decimal digits")]
    Exponent,
    #[error("is not a decimal number (found `{0}`)")]
    NotDecimal(char),
    #[error("has digits below the smallest unit of {currency} ({exponent} decimal(s)); it is not rounded")]
    TooPrecise { currency: Currency, exponent: u16 },
    #[error(
        "exceeds the largest amount accepted, {} minor units",
        Money::MAX_AMOUNT
    )]
    TooLarge,
    #[error("must not be negative")]
    Negative,
    #[error("is in {currency}, which has no minor unit defined by ISO 4217")]
    NoExponent { currency: Currency },
}

/// The digits after the decimal point in `currency`'s minor unit, from ISO 4217.
pub fn exponent(currency: Currency) -> Result<u16, AmountError> {
    // `Currency` only accepts codes that have an exponent; asking iso_currency again by
    // code keeps `domain::values` free of a storefront-only question.
    iso_currency::Currency::from_code(currency.code())
        .and_then(|c| c.exponent())
        .ok_or(AmountError::NoExponent { currency })
}

/// `raw` in minor units of `currency`, signed: `"199.65"` USD is 19965, `"1000.00"` JPY is
/// 1000, `"-10.00"` USD is -1000, `"29.999"` USD is an error.
pub fn minor_units(raw: &str, currency: Currency) -> Result<i64, AmountError> {
    let exponent = usize::from(exponent(currency)?);
    let (negative, unsigned) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if unsigned.is_empty() {
        return Err(AmountError::Empty);
    }
    if let Some(c) = unsigned.chars().find(|c| !c.is_ascii_digit() && *c != '.') {
        return Err(match c {
            '-' | '+' => AmountError::MisplacedSign,
            'e' | 'E' => AmountError::Exponent,
            other => AmountError::NotDecimal(other),
        });
    }
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (unsigned, ""),
    };
    // "5." and ".5" are nobody's money format; a second point is caught here too.
    if whole.is_empty() || (unsigned.contains('.') && fraction.is_empty()) {
        return Err(AmountError::NotDecimal('.'));
    }
    if let Some(point) = fraction.chars().find(|c| *c == '.') {
        return Err(AmountError::NotDecimal(point));
    }
    let (kept, beyond) = fraction.split_at(fraction.len().min(exponent));
    if beyond.bytes().any(|b| b != b'0') {
        return Err(AmountError::TooPrecise {
            currency,
            exponent: exponent as u16,
        });
    }
    // Leading zeros say nothing; what is left must fit well within an i64 before
    // scaling (MAX_AMOUNT is 10^15, 16 digits), so the arithmetic below cannot overflow.
    let whole = whole.trim_start_matches('0');
    if whole.len() > 16 {
        return Err(AmountError::TooLarge);
    }
    let digits = |text: &str| text.bytes().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    let padding = 10i64.pow((exponent - kept.len()) as u32);
    let minor = digits(whole)
        .checked_mul(10i64.pow(exponent as u32))
        .and_then(|w| w.checked_add(digits(kept) * padding))
        .filter(|m| *m <= Money::MAX_AMOUNT)
        .ok_or(AmountError::TooLarge)?;
    Ok(if negative { -minor } else { minor })
}

/// An amount exactly as a payload wrote it, read from a JSON string or a JSON number and
/// kept as text until the order's currency is known.
///
/// A JSON number is taken through `serde_json::Number`'s own text. serde_json prints a
/// float as the shortest decimal that reads back as the same double (ryu), so any
/// decimal of at most 15 significant digits (every price up to 10^13 major units with two
/// decimals) prints back exactly as the platform wrote it, bar trailing zeros; an integer
/// stays an integer. A number the double could not hold exactly comes out with more digits
/// or an exponent, and is refused by the same rules as text rather than rounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(String);

impl Amount {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Signed minor units (a Woo refund's total is negative).
    pub fn minor_units(&self, currency: Currency) -> Result<i64, AmountError> {
        minor_units(&self.0, currency)
    }

    /// A price, charge or total: never negative.
    pub fn money(&self, currency: Currency) -> Result<Money, AmountError> {
        let minor = self.minor_units(currency)?;
        Money::parse(minor, currency).map_err(|_| AmountError::Negative)
    }

    /// An amount stated with either sign whose size is what counts (Woo writes refunds
    /// as `"-10.00"`, Shopify as `"10.00"`).
    pub fn magnitude(&self, currency: Currency) -> Result<Money, AmountError> {
        let minor = self.minor_units(currency)?;
        Money::parse(minor.abs(), currency).map_err(|_| AmountError::TooLarge)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount as a decimal string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<Amount, E> {
                Ok(Amount(raw.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Amount, E> {
                Ok(Amount(serde_json::Number::from(n).to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Amount, E> {
                Ok(Amount(serde_json::Number::from(n).to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Amount, E> {
                serde_json::Number::from_f64(n)
                    .map(|n| Amount(n.to_string()))
                    .ok_or_else(|| E::custom("an amount must be a finite number"))
            }
        }
        d.deserialize_any(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn currency(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn usd(raw: &str) -> Result<i64, AmountError> {
        minor_units(raw, currency("USD"))
    }

    fn from_json(json: &str) -> Amount {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_decimal_string_is_scaled_by_the_currencys_exponent() {
        assert_eq!(usd("199.65"), Ok(19965));
        assert_eq!(minor_units("1000", currency("JPY")), Ok(1000));
        assert_eq!(minor_units("12.345", currency("KWD")), Ok(12345));
        assert_eq!(minor_units("0.5", currency("KWD")), Ok(500));
    }

    #[test]
    fn fewer_decimals_than_the_exponent_are_padded() {
        assert_eq!(usd("5"), Ok(500));
        assert_eq!(usd("5.5"), Ok(550));
        assert_eq!(usd("0.05"), Ok(5));
    }

    #[test]
    fn digits_beyond_the_exponent_are_accepted_only_when_they_are_zeros() {
        assert_eq!(minor_units("1000.00", currency("JPY")), Ok(1000));
        assert_eq!(usd("10.5000"), Ok(1050));
        assert_eq!(
            usd("29.999"),
            Err(AmountError::TooPrecise {
                currency: currency("USD"),
                exponent: 2
            })
        );
        assert!(matches!(
            minor_units("1000.50", currency("JPY")),
            Err(AmountError::TooPrecise { exponent: 0, .. })
        ));
    }

    #[test]
    fn a_leading_minus_gives_a_negative_amount() {
        assert_eq!(usd("-10.00"), Ok(-1000));
        assert_eq!(usd("-0.00"), Ok(0));
    }

    #[test]
    fn signs_anywhere_but_the_front_are_refused() {
        for raw in ["+10.00", "--1", "1-0", "10.-5", "-+1", "1.0-"] {
            assert_eq!(usd(raw), Err(AmountError::MisplacedSign), "{raw}");
        }
    }

    #[test]
    fn empty_text_is_refused() {
        assert_eq!(usd(""), Err(AmountError::Empty));
        assert_eq!(usd("-"), Err(AmountError::Empty));
    }

    #[test]
    fn exponents_are_refused() {
        assert_eq!(usd("1e3"), Err(AmountError::Exponent));
        assert_eq!(usd("1.5E2"), Err(AmountError::Exponent));
    }

    #[test]
    fn anything_but_plain_decimal_digits_is_refused() {
        assert_eq!(usd("1,000.00"), Err(AmountError::NotDecimal(',')));
        assert_eq!(usd(" 1.00"), Err(AmountError::NotDecimal(' ')));
        assert_eq!(usd("1.00 "), Err(AmountError::NotDecimal(' ')));
        assert_eq!(usd("$1"), Err(AmountError::NotDecimal('$')));
        assert_eq!(usd("1.2.3"), Err(AmountError::NotDecimal('.')));
        assert_eq!(usd(".5"), Err(AmountError::NotDecimal('.')));
        assert_eq!(usd("5."), Err(AmountError::NotDecimal('.')));
        assert_eq!(usd("NaN"), Err(AmountError::NotDecimal('N')));
    }

    #[test]
    fn amounts_beyond_the_largest_accepted_are_refused() {
        // MAX_AMOUNT is 10^15 minor units: 10^13 dollars.
        assert_eq!(usd("10000000000000.00"), Ok(Money::MAX_AMOUNT));
        assert_eq!(usd("10000000000000.01"), Err(AmountError::TooLarge));
        assert_eq!(usd("-10000000000000.01"), Err(AmountError::TooLarge));
        assert_eq!(usd("99999999999999999999999"), Err(AmountError::TooLarge));
        assert_eq!(usd("000000000000000000001.00"), Ok(100));
    }

    #[test]
    fn a_json_number_is_read_through_its_shortest_text() {
        assert_eq!(from_json("19.99").minor_units(currency("USD")), Ok(1999));
        assert_eq!(from_json("1000").minor_units(currency("JPY")), Ok(1000));
        assert_eq!(from_json("-3.5").minor_units(currency("USD")), Ok(-350));
        assert_eq!(from_json("12.345").minor_units(currency("KWD")), Ok(12345));
        // Woo's `price` is total / quantity as a double: refused, not rounded.
        assert!(matches!(
            from_json("3.3333333333333335").minor_units(currency("USD")),
            Err(AmountError::TooPrecise { .. })
        ));
        assert_eq!(
            from_json("1e21").minor_units(currency("USD")),
            Err(AmountError::Exponent)
        );
    }

    #[test]
    fn a_json_string_is_kept_as_written() {
        assert_eq!(from_json("\"0199.650\"").as_str(), "0199.650");
        assert!(serde_json::from_str::<Amount>("true").is_err());
    }

    #[test]
    fn a_price_is_never_negative_but_a_refund_counts_by_its_size() {
        let usd = currency("USD");
        assert_eq!(Amount::new("-1.00").money(usd), Err(AmountError::Negative));
        assert_eq!(
            Amount::new("-10.00").magnitude(usd),
            Ok(Money::parse(1000, usd).unwrap())
        );
    }
}
