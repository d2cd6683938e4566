//! Per-token rate limits: `200/s`, `1000/min`, `50000/h`. A token bucket in memory,
//! per process: with N instances a token gets up to N times its rate, which is the
//! honest price of not putting a shared counter on every request.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    requests: u32,
    per: Duration,
}

impl Rate {
    pub fn parse(raw: &str) -> Result<Rate, String> {
        let (count, unit) = raw
            .split_once('/')
            .ok_or("must be requests per unit, like `200/s`, `1000/min` or `50000/h`")?;
        let requests: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or("must start with a whole number of requests above 0")?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("`{other}` is not a unit; use s, min or h")),
        };
        Ok(Rate { requests, per })
    }

    fn per_second(self) -> f64 {
        f64::from(self.requests) / self.per.as_secs_f64()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

/// A full bucket holds one unit's worth of requests, so a quiet token may burst that
/// much, then goes at its rate.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    bucket: Mutex<(f64, Instant)>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            bucket: Mutex::new((f64::from(rate.requests), Instant::now())),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one request's worth, or says how long until one is there.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *bucket;
        let capacity = f64::from(self.rate.requests);
        *tokens = (*tokens
            + now.saturating_duration_since(*last).as_secs_f64() * self.rate.per_second())
        .min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - *tokens) / self.rate.per_second(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_requests_per_unit() {
        assert_eq!(Rate::parse("200/s").unwrap().to_string(), "200/s");
        assert_eq!(Rate::parse("1000/min").unwrap().to_string(), "1000/min");
        assert_eq!(Rate::parse("5/h").unwrap().to_string(), "5/h");
        for bad in ["", "200", "0/s", "-1/s", "2.5/s", "10/day"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_bursts_its_size_then_refills_at_the_rate() {
        let limiter = Limiter::new(Rate::parse("2/s").unwrap());
        let start = Instant::now();
        assert!(limiter.take(start).is_ok());
        assert!(limiter.take(start).is_ok());
        let wait = limiter.take(start).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(limiter.take(start + Duration::from_millis(500)).is_ok());
        assert!(limiter.take(start + Duration::from_millis(500)).is_err());
    }
}
