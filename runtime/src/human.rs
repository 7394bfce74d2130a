//! Times as people read them, for the CLIs' text output: an RFC 3339 instant
//! with how far it is from now ("2026-12-07T10:00:00Z (in 2h 5m)"). JSON output
//! keeps Unix seconds, which scripts compare; this is only for eyes.

use std::time::{Duration, UNIX_EPOCH};

/// `unix` (seconds since the epoch) as RFC 3339 in UTC with the distance from
/// `now`: "… (in 59m 12s)", "… (3h 2m ago)", "… (now)". 0 reads "never"
/// (the wire's "unset"); a time the calendar cannot hold is shown as the raw number.
pub fn instant(unix: i64, now: i64) -> String {
    if unix == 0 {
        return "never".into();
    }
    let Some(at) = u64::try_from(unix)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        // humantime formats years up to 9999 only.
        .filter(|_| unix < 253_402_300_800)
    else {
        return format!("{unix} (Unix seconds)");
    };
    let when = humantime::format_rfc3339_seconds(at);
    let delta = unix.saturating_sub(now);
    match delta {
        0 => format!("{when} (now)"),
        d if d > 0 => format!("{when} (in {})", span(d.unsigned_abs())),
        d => format!("{when} ({} ago)", span(d.unsigned_abs())),
    }
}

/// [`instant`] against the wall clock.
pub fn instant_from_now(unix: i64) -> String {
    instant(unix, crate::unix_now())
}

/// A length of time in its two largest units: "45s", "59m 12s", "2h 5m", "3d 4h",
/// "400d". Seconds below a day's precision are dropped: a reader comparing
/// expiries wants the order of magnitude first.
pub fn span(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = UNITS.iter().position(|(size, _)| secs >= *size) else {
        return "0s".into();
    };
    let (size, name) = UNITS[first];
    let lead = format!("{}{name}", secs / size);
    // The next unit down, unless it is zero ("3d 0h") or the first already says
    // enough (a hundred days or more).
    match UNITS.get(first + 1) {
        Some((next, next_name)) if secs / size < 100 && (secs % size) / next > 0 => {
            format!("{lead} {}{next_name}", (secs % size) / next)
        }
        _ => lead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_601_600; // 2026-12-07T00:00:00Z

    #[test]
    fn future_and_past_instants_say_their_distance() {
        assert_eq!(
            instant(NOW + 3_552, NOW),
            "2026-12-07T00:59:12Z (in 59m 12s)"
        );
        assert_eq!(
            instant(NOW - 3 * 3_600 - 120, NOW),
            "2026-12-06T20:58:00Z (3h 2m ago)"
        );
        assert_eq!(instant(NOW, NOW), "2026-12-07T00:00:00Z (now)");
    }

    #[test]
    fn unset_and_unrepresentable_times_are_named_not_misprinted() {
        assert_eq!(instant(0, NOW), "never");
        assert_eq!(instant(-5, NOW), "-5 (Unix seconds)");
        assert_eq!(
            instant(i64::MAX, NOW),
            format!("{} (Unix seconds)", i64::MAX)
        );
    }

    #[test]
    fn spans_keep_the_two_largest_units_without_gaps() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(45), "45s");
        assert_eq!(span(60), "1m");
        assert_eq!(span(3_552), "59m 12s");
        assert_eq!(span(2 * 3_600 + 5 * 60 + 7), "2h 5m");
        assert_eq!(span(3 * 86_400 + 4 * 3_600 + 59), "3d 4h");
        assert_eq!(span(3 * 86_400 + 5 * 60), "3d");
        assert_eq!(span(400 * 86_400 + 3_600), "400d");
    }
}
