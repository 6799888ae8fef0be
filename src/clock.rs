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
}
