//! The typed values' rules: what each accepts and refuses, and why.

use super::*;

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

#[test]
fn identifiers_accept_the_storefront_alphabet_and_nothing_else() {
    assert!(OrderId::parse("1001-a_B").is_ok());
    assert_eq!(OrderId::parse(""), Err(ValueError::Empty));
    assert!(matches!(
        OrderId::parse("a/b"),
        Err(ValueError::InvalidCharacters { .. })
    ));
    assert_eq!(
        OrderId::parse(&"x".repeat(65)),
        Err(ValueError::TooLong { max: 64 })
    );
    assert!(Sku::parse("TSHIRT.RED.M").is_ok());
    assert!(OrderId::parse("TSHIRT.RED.M").is_err());
}

#[test]
fn quantities_are_positive_and_bounded() {
    assert_eq!(Quantity::parse(0), Err(ValueError::NotPositive));
    assert_eq!(Quantity::parse(-3), Err(ValueError::NotPositive));
    assert_eq!(Quantity::parse(2).unwrap().get(), 2);
    assert!(matches!(
        Quantity::parse(1_000_001),
        Err(ValueError::TooLarge { .. })
    ));
}

#[test]
fn event_times_read_as_chrono_reads_them() {
    use chrono::{DateTime, FixedOffset, Utc};
    #[derive(Deserialize)]
    struct At(#[serde(deserialize_with = "utc::deserialize")] DateTime<Utc>);
    let chrono = |raw: &str| {
        raw.parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc))
            .ok()
    };
    for raw in [
        "2026-11-21T09:05:07Z",
        "2026-11-21T09:05:07.1Z",
        "2026-11-21T09:05:07.123Z",
        "2026-11-21T09:05:07.123456Z",
        "2026-11-21T09:05:07.123456789Z",
        "2024-02-29T23:59:59.999Z",
        "0001-01-01T00:00:00Z",
        "2026-11-21T09:05:07+02:00",
        "2026-11-21 09:05:07z",
        "2016-12-31T23:59:60Z",
        "2026-11-21T09:05:07.1234567891Z",
        "2025-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-21T24:00:00Z",
        "2026-11-21T09:05:07.Z",
        "2026-11-21T09:05:07.12aZ",
        "+2026-11-21T09:05:07Z",
        "2026-11-21",
        "",
    ] {
        let ours = serde_json::from_value::<At>(serde_json::json!(raw))
            .ok()
            .map(|a| a.0);
        assert_eq!(ours, chrono(raw), "{raw:?}");
        if utc::zulu(raw).is_some() {
            assert_eq!(utc::zulu(raw), chrono(raw), "{raw:?}");
        }
    }
    let now = Utc::now();
    let written = serde_json::to_value(now).unwrap();
    assert_eq!(serde_json::from_value::<At>(written).unwrap().0, now);
}

#[test]
fn currencies_in_circulation_only() {
    assert_eq!(usd().code(), "USD");
    assert!(Currency::parse("JPY").is_ok());
    assert!(Currency::parse("usd").is_err());
    assert!(
        Currency::parse("XAU").is_err(),
        "gold is not a checkout currency"
    );
    assert!(Currency::parse("XXX").is_err());
    assert!(Currency::parse("ABC").is_err());
}

#[test]
fn the_currency_lookup_agrees_with_iso_4217_on_every_three_letter_code() {
    let letters = b'A'..=b'Z';
    for a in letters.clone() {
        for b in letters.clone() {
            for c in letters.clone() {
                let code = String::from_utf8(vec![a, b, c]).unwrap();
                let circulating = iso_currency::Currency::from_code(&code).filter(|c| {
                    c.exponent().is_some()
                        && !c.is_fund()
                        && !c.is_special()
                        && c.is_superseded().is_none()
                });
                assert_eq!(
                    Currency::parse(&code).ok().map(|c| c.0),
                    circulating,
                    "{code}"
                );
            }
        }
    }
    for odd in ["", "US", "USDD", "ÜSD", "U\u{0}D", "uSD"] {
        assert!(Currency::parse(odd).is_err(), "{odd:?}");
    }
}

#[test]
fn money_arithmetic_never_overflows_or_mixes_currencies() {
    let eur = Currency::parse("EUR").unwrap();
    let ten = Money::parse(10, usd()).unwrap();
    assert_eq!(ten.checked_add(ten).unwrap().amount(), 20);
    assert_eq!(ten.checked_add(Money::parse(1, eur).unwrap()), None);
    assert_eq!(ten.checked_sub(Money::parse(11, usd()).unwrap()), None);
    let big = Money::parse(Money::MAX_AMOUNT, usd()).unwrap();
    assert_eq!(big.checked_add(ten), None);
    assert_eq!(big.checked_mul(Quantity::parse(2).unwrap()), None);
    assert_eq!(Money::parse(-1, usd()), Err(ValueError::Negative));
    assert_eq!(
        Money::parse_positive(0, usd()),
        Err(ValueError::NotPositive)
    );
}

#[test]
fn values_round_trip_through_their_plain_json_form() {
    let money = Money::parse(1999, usd()).unwrap();
    let json = serde_json::to_value(money).unwrap();
    assert_eq!(json, serde_json::json!({"amount": 1999, "currency": "USD"}));
    assert_eq!(serde_json::from_value::<Money>(json).unwrap(), money);
    assert!(serde_json::from_value::<Sku>(serde_json::json!("bad sku")).is_err());
}

#[test]
fn text_is_trimmed_and_bounded() {
    assert_eq!(Text::parse("  late  ").unwrap().as_str(), "late");
    assert_eq!(Text::parse("   "), Err(ValueError::Empty));
    assert!(Text::parse(&"x".repeat(501)).is_err());
}

#[test]
fn text_holds_no_control_character_but_tabs_and_newlines() {
    for bad in [
        "\0",
        "a\0b",
        "\u{1}",
        "\u{1b}[31m",
        "\u{7f}",
        "\u{85}",
        "\u{9f}",
        "a\rb",
        "a\r",
        "\u{b}",
        "\u{c}",
    ] {
        let found = bad.chars().find(|c| c.is_control()).unwrap();
        let refused = Some(ValueError::ControlCharacter(found));
        assert_eq!(Text::parse(&format!("x{bad}x")).err(), refused, "{bad:?}");
        assert_eq!(FreeText::parse(bad).err(), refused, "{bad:?}");
        assert_eq!(check_line(bad).err(), refused, "{bad:?}");
    }
    for good in [
        "a\tb",
        "line one\nline two",
        "windows\r\nnewline",
        "caf\u{e9} \u{202e}",
    ] {
        assert_eq!(Text::parse(good).unwrap().as_str(), good);
        assert_eq!(FreeText::parse(good).unwrap().as_str(), good);
    }
    assert!(check_line("a\tb").is_err(), "a line has no tab");
    assert!(check_line("a b \u{e9}").is_ok());
    assert_eq!(
        ValueError::ControlCharacter('\0').to_string(),
        "must not contain control characters (found U+0000)"
    );
    assert_eq!(FreeText::parse("").unwrap().as_str(), "", "may be empty");
    assert_eq!(FreeText::parse(" kept ").unwrap().as_str(), " kept ");
    assert!(FreeText::parse(&"x".repeat(501)).is_err());
}

#[test]
fn ids_and_skus_are_never_dot_segments_nor_hold_a_slash() {
    for id in [".", ".."] {
        assert_eq!(Sku::parse(id), Err(ValueError::DotSegment));
        assert_eq!(OrderId::parse(id), Err(ValueError::DotSegment));
        assert!(serde_json::from_value::<Sku>(serde_json::json!(id)).is_err());
    }
    for id in ["a/b", "/", "a\0", "\0"] {
        assert!(Sku::parse(id).is_err(), "{id:?}");
        assert!(OrderId::parse(id).is_err(), "{id:?}");
    }
    assert!(
        Sku::parse("...").is_ok(),
        "only the two dot segments are special"
    );
    assert!(Sku::parse(".hidden").is_ok());
}

#[test]
fn what_the_log_holds_is_read_as_written_but_for_nul() {
    let stored = serde_json::json!(["..", "a\0b\u{1b}", "", "gb"]);
    let read = || {
        let [sku, text, empty, country]: [serde_json::Value; 4] =
            serde_json::from_value(stored.clone()).unwrap();
        (
            serde_json::from_value::<Sku>(sku),
            serde_json::from_value::<Text>(text.clone()),
            serde_json::from_value::<FreeText>(text),
            serde_json::from_value::<Text>(empty),
            serde_json::from_value::<CountryCode>(country),
        )
    };
    let (sku, text, free, empty, country) = reading_stored(read);
    assert_eq!(sku.unwrap().as_str(), "..");
    assert_eq!(text.unwrap().as_str(), "a\u{fffd}b\u{1b}");
    assert_eq!(free.unwrap().as_str(), "a\u{fffd}b\u{1b}");
    assert_eq!(empty.unwrap().as_str(), "");
    assert_eq!(country.unwrap(), CountryCode("gb".into()));
    // Outside it, and after it, the rules hold again.
    let (sku, text, free, empty, country) = read();
    assert!(sku.is_err() && text.is_err() && free.is_err() && empty.is_err());
    assert!(country.is_err());
    let nested = reading_stored(|| reading_stored(|| 1) + usize::from(is_reading_stored()));
    assert_eq!(nested, 2, "an inner decode restores the outer one's flag");
    assert!(!is_reading_stored());
    assert_eq!(Sku::from_stored("..").as_str(), "..");
}
