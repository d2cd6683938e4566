//! Fixed-width UTC time text (`2026-11-21T12:00:00.000000Z`): sorts as it reads.
//!
//! Used as `#[serde(with = "fixed_time")]` on view rows (and [`option`] for an
//! optional time), and to format times bound as parameters. It never reads a clock.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub fn format(t: &DateTime<Utc>) -> String {
    Fixed(t).to_string()
}

/// Displays as [`format`] returns, without allocating: views write millions of these
/// when a rebuild flushes.
pub struct Fixed<'a>(pub &'a DateTime<Utc>);

impl std::fmt::Display for Fixed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use chrono::{Datelike, Timelike};
        let t = self.0.naive_utc();
        let year = t.year();
        if !(0..=9999).contains(&year) {
            return write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
        }
        // As chrono's `%S%.6f`: a leap second reads as second 60.
        let nanos = t.nanosecond();
        let second = t.second() + nanos / 1_000_000_000;
        let micros = (nanos % 1_000_000_000) / 1_000;
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year as u32);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, second);
        put(20, 6, micros);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
    }
}

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Fixed(t))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}

pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&super::Fixed(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|raw| {
                DateTime::parse_from_rfc3339(&raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use serde::Serialize;

    use crate::store::views::fixed_time;

    #[test]
    fn fixed_time_reads_as_chrono_formats_it() {
        let times = [
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            Utc.timestamp_opt(1_790_000_000, 123_456_789).unwrap(),
            Utc.timestamp_opt(0, 999_999_999).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            // A leap second.
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        for t in times {
            assert_eq!(
                fixed_time::format(&t),
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "{t:?}"
            );
            let json = serde_json::to_string(&fixed_time::Fixed(&t).to_string()).unwrap();
            assert_eq!(
                serde_json::to_string(&Wrapped { t }).unwrap(),
                format!("{{\"t\":{json}}}")
            );
        }
    }

    #[derive(Serialize)]
    struct Wrapped {
        #[serde(with = "fixed_time")]
        t: DateTime<Utc>,
    }
}
