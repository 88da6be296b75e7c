//! GCRA (generic cell rate algorithm) limiter for incident creation.
//!
//! One theoretical arrival time (TAT) per key; a request at `now` conforms
//! when `max(tat, now) + period - now <= period * burst`. No burst at window
//! edges, and a full bucket is just `tat <= now`, so idle keys can be
//! forgotten.

use super::config::GcraConfig;

/// One GCRA cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Gcra {
    tat: i64,
}

impl Gcra {
    /// Would a request at `now` conform?
    pub(crate) fn allows(&self, cfg: GcraConfig, now: i64) -> bool {
        let period = cfg.period_ms.max(1);
        let burst = i64::from(cfg.burst.max(1));
        let next = self.tat.max(now).saturating_add(period);
        next.saturating_sub(now) <= period.saturating_mul(burst)
    }

    /// Records a conforming request at `now`.
    pub(crate) fn consume(&mut self, cfg: GcraConfig, now: i64) {
        let period = cfg.period_ms.max(1);
        self.tat = self.tat.max(now).saturating_add(period);
    }

    /// The bucket is full again (nothing to remember).
    pub(crate) fn idle(&self, now: i64) -> bool {
        self.tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let cfg = GcraConfig {
            period_ms: 10_000,
            burst: 3,
        };
        let mut g = Gcra::default();
        let now = 1_000_000;
        for _ in 0..3 {
            assert!(g.allows(cfg, now));
            g.consume(cfg, now);
        }
        assert!(!g.allows(cfg, now));
        assert!(!g.allows(cfg, now + 9_999));
        assert!(g.allows(cfg, now + 10_000));
        assert!(!g.idle(now + 10_000));
        assert!(g.idle(now + 30_000));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let cfg = GcraConfig {
            period_ms: i64::MAX,
            burst: u32::MAX,
        };
        let mut g = Gcra::default();
        assert!(g.allows(cfg, i64::MAX));
        g.consume(cfg, i64::MAX);
        let _ = g.allows(cfg, i64::MIN);
        let zero = GcraConfig {
            period_ms: 0,
            burst: 0,
        };
        assert!(Gcra::default().allows(zero, 0));
    }
}
