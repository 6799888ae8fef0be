//! The daemon's clock for everything a command does: CLOCK_MONOTONIC_COARSE, which the
//! vDSO serves without a system call whatever the clocksource (on a machine whose
//! clocksource has no vDSO path, such as the lab's HPET, every CLOCK_MONOTONIC read is a
//! system call). Its resolution is one tick (1-10 ms), the same as sg's own `duration`,
//! which the driver computes from jiffies; waits bounded by a command's timeout need no
//! finer clock either.

use nix::time::{clock_gettime, ClockId};
use std::ops::Add;
use std::time::Duration;

/// A point in time on the coarse monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Coarse(Duration);

impl Coarse {
    pub fn now() -> Coarse {
        // CLOCK_MONOTONIC_COARSE cannot fail on Linux >= 2.6.32; fall back to zero rather
        // than panic on a kernel that refuses it (durations then read 0).
        match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
            Ok(ts) => Coarse(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)),
            Err(_) => Coarse(Duration::ZERO),
        }
    }

    /// Time since `earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Coarse) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    pub fn elapsed(self) -> Duration {
        Coarse::now().since(self)
    }

    /// Milliseconds since the clock's start (boot), for keeping a time in an atomic.
    pub fn as_millis(self) -> u64 {
        self.0.as_millis().min(u128::from(u64::MAX)) as u64
    }

    pub fn from_millis(ms: u64) -> Coarse {
        Coarse(Duration::from_millis(ms))
    }

    /// Milliseconds since `earlier`, saturated to u32 (sg's `duration`).
    pub fn millis_since(self, earlier: Coarse) -> u32 {
        self.since(earlier).as_millis().min(u128::from(u32::MAX)) as u32
    }
}

impl Add<Duration> for Coarse {
    type Output = Coarse;
    fn add(self, d: Duration) -> Coarse {
        Coarse(self.0.saturating_add(d))
    }
}

/// At most one log line per `interval` for a recurring condition (a map with no usable
/// path answers every command with an error: at the rate callers send them, one line
/// each would drown the log and cost the daemon as much as the commands). The lines left
/// out are counted and the next one says how many.
pub struct LogLimit {
    interval: Duration,
    /// When the last line was let through, and how many were held back since.
    state: parking_lot::Mutex<(Option<Coarse>, u64)>,
}

impl LogLimit {
    pub fn new(interval: Duration) -> LogLimit {
        LogLimit {
            interval,
            state: parking_lot::Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` if a line should be logged at `now` (`n` lines were held back since the
    /// last one), `None` if this one is held back.
    pub fn admit(&self, now: Coarse) -> Option<u64> {
        let mut state = self.state.lock();
        let (last, held) = &mut *state;
        match *last {
            Some(t) if now.since(t) < self.interval => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_forward_and_saturates() {
        let a = Coarse::now();
        std::thread::sleep(Duration::from_millis(30));
        let b = Coarse::now();
        assert!(b > a);
        // One tick of slack: the coarse clock advances in ticks (<= 10 ms).
        assert!(b.since(a) >= Duration::from_millis(20), "{:?}", b.since(a));
        assert_eq!(a.since(b), Duration::ZERO);
        assert_eq!(
            a + Duration::from_secs(1),
            Coarse(a.0 + Duration::from_secs(1))
        );
        assert_eq!(b.millis_since(a), b.since(a).as_millis() as u32);
    }

    #[test]
    fn log_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let t0 = Coarse::now();
        assert_eq!(limit.admit(t0), Some(0), "the first line goes through");
        assert_eq!(limit.admit(t0 + Duration::from_millis(10)), None);
        assert_eq!(limit.admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(
            limit.admit(t0 + Duration::from_secs(1)),
            Some(2),
            "the next line says how many were held back"
        );
        assert_eq!(limit.admit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(limit.admit(t0 + Duration::from_secs(3)), Some(1));
    }
}
