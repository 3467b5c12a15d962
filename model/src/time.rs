//! Virtual or wall time, passed into the model as milliseconds since the Unix epoch.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A point in time in milliseconds since the Unix epoch. The model never reads a clock:
/// the simulator passes its virtual clock, the controller the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// This instant as a Kubernetes `Time` (second precision on the wire).
    pub fn to_time(self) -> Time {
        let millis = i64::try_from(self.0).unwrap_or(i64::MAX);
        Time(jiff::Timestamp::from_millisecond(millis).unwrap_or(jiff::Timestamp::MAX))
    }

    /// Converts a Kubernetes `Time` back to milliseconds (0 before the epoch).
    pub fn from_time(time: &Time) -> Self {
        Millis(u64::try_from(time.0.as_millisecond()).unwrap_or(0))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Formats a duration the way Fluid shows `setupDuration`: `2m30s`, `45s`, `1h2m3s`.
pub fn format_duration_ms(duration_ms: u64) -> String {
    let seconds = duration_ms / 1000;
    let (hours, minutes, seconds) = (seconds / 3600, (seconds / 60) % 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_and_durations_read_well() {
        let now = Millis(1_700_000_000_000);
        assert_eq!(Millis::from_time(&now.to_time()), now);
        assert_eq!(format_duration_ms(45_000), "45s");
        assert_eq!(format_duration_ms(150_000), "2m30s");
        assert_eq!(format_duration_ms(3_723_000), "1h2m3s");
        assert_eq!(Millis(5).since(Millis(9)), 0);
    }
}
