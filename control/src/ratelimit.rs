//! Per-caller rate limits: a token bucket per key (an API key id for ticket issuance, an account
//! for ticket exchange), refilled continuously. A refusal says when to retry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One limit: `rate` tokens per second, bursts up to `rate` (one second's worth, at least 1).
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_sec == 0` disables the limit.
    pub fn new(per_sec: u32) -> Self {
        Self {
            rate: f64::from(per_sec),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(retry_after)` when the bucket is empty.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let burst = self.rate.max(1.0);
        let now = Instant::now();
        let mut map = match self.buckets.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if map.len() > 100_000 {
            // Forget idle callers rather than grow without bound.
            map.retain(|_, (tokens, at)| {
                *tokens < burst || now.duration_since(*at) < Duration::from_secs(60)
            });
        }
        let (tokens, at) = map.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// The limits the API applies.
pub struct RateLimits {
    /// `POST /v1/tickets`, per API key.
    pub tickets: RateLimiter,
    /// `POST /v1/sessions/exchange`, per account that issued the ticket.
    pub exchanges: RateLimiter,
}

impl Default for RateLimits {
    /// No limits (tests); the server's defaults come from its command line.
    fn default() -> Self {
        Self {
            tickets: RateLimiter::new(0),
            exchanges: RateLimiter::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_retry_hint() {
        let l = RateLimiter::new(5);
        for _ in 0..5 {
            assert!(l.check("k").is_ok());
        }
        let retry = l.check("k").unwrap_err();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_millis(250),
            "{retry:?}"
        );
        assert!(l.check("other").is_ok(), "buckets are per key");
    }

    #[test]
    fn zero_disables() {
        let l = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert!(l.check("k").is_ok());
        }
    }
}
