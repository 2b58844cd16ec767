//! The wall clock, in the units stackwatch stores and sends: one home for "now", and
//! for the calendar arithmetic that turns Unix days into dates and back.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, Unix seconds (0 if the clock is before 1970).
pub fn unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Now, Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, Unix nanoseconds (0 if the clock is before 1970).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01), proleptic Gregorian.
pub fn date_of_day(days: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{:02}-{:02}", if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day number (days since 1970-01-01) of year `y`, month `m` (1..=12), day `d`,
/// proleptic Gregorian; None for a month or day out of range.
pub fn day_of_date(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_become_dates_and_back() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(20_417), "2025-11-25");
        assert_eq!(date_of_day(11_016), "2000-02-29");
        assert_eq!(day_of_date(1970, 1, 1), Some(0));
        assert_eq!(day_of_date(2025, 11, 25), Some(20_417));
        assert_eq!(day_of_date(2000, 2, 29), Some(11_016));
        assert_eq!(day_of_date(2025, 13, 1), None);
        for day in [-1_000, 0, 59, 60, 10_957, 20_417, 100_000] {
            let date = date_of_day(day);
            let mut parts = date.split('-').map(|p| p.parse::<i64>().unwrap());
            let (y, m, d) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            assert_eq!(day_of_date(y, m, d), Some(day), "{date}");
        }
    }
}
