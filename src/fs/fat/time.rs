//! FAT dates and times to Unix time, as the Linux kernel's `fat_time_fat2unix` converts them
//! (fs/fat/misc.c), out-of-range fields included: FAT stores local time with no zone, and the
//! kernel reads it as UTC unless mounted with `tz=` or `time_offset=` (or the kernel's own
//! timezone was set from a local-time RTC), which is what ferry does too.

use super::super::Timestamp;

/// Days from 1970-01-01 to 1980-01-01, FAT's epoch.
const DAYS_DELTA: i64 = 365 * 10 + 2;
/// FAT year 120 (2100) is not a leap year.
const YEAR_2100: i64 = 120;
/// Days before each month, indexed by the month field (0 and 13..15 are invalid months the
/// kernel reads as this table says).
const DAYS_IN_YEAR: [i64; 16] = [
    0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 0, 0, 0,
];

/// A FAT `date` (bits 15..9 year since 1980, 8..5 month, 4..0 day), `time` (15..11 hours,
/// 10..5 minutes, 4..0 two-second units) and `cs` (hundredths of a second to add, creation time
/// only), as Unix time.
// The calendar arithmetic is over fields of at most 7 bits: under 2^17 days, so seconds stay
// below 2^34, far inside i64.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn to_unix(time: u16, date: u16, cs: u8) -> Timestamp {
    let year = i64::from(date >> 9);
    let month = ((date >> 5) & 0xf).max(1);
    let day = i64::from(date & 0x1f).max(1) - 1;
    let leap_year = year & 3 == 0 && year != YEAR_2100;
    let mut leap_days = (year + 3) / 4;
    if year > YEAR_2100 {
        leap_days -= 1;
    }
    if leap_year && month > 2 {
        leap_days += 1;
    }
    // month is 1..=15: inside the table.
    let before = DAYS_IN_YEAR.get(usize::from(month)).copied().unwrap_or(0);
    let days = year * 365 + leap_days + before + day + DAYS_DELTA;
    let secs = i64::from(time & 0x1f) * 2
        + i64::from((time >> 5) & 0x3f) * 60
        + i64::from(time >> 11) * 3600
        + days * 86400;
    Timestamp {
        secs: secs + i64::from(cs / 100),
        nsecs: u32::from(cs % 100) * 10_000_000,
    }
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // fixtures
mod tests {
    use super::*;

    fn fat(y: u16, mo: u16, d: u16, h: u16, mi: u16, s: u16) -> (u16, u16) {
        (
            (h << 11) | (mi << 5) | (s / 2),
            ((y - 1980) << 9) | (mo << 5) | d,
        )
    }

    #[test]
    fn fat_times_as_the_kernel_reads_them() {
        let (t, d) = fat(1980, 1, 1, 0, 0, 0);
        assert_eq!(to_unix(t, d, 0).secs, 315_532_800);
        // 2024-02-29 13:45:58 UTC = 1709214358.
        let (t, d) = fat(2024, 2, 29, 13, 45, 58);
        assert_eq!(to_unix(t, d, 0).secs, 1_709_214_358);
        // 2026-12-03 16:02:10 UTC = 1796313730, with 1.37 s more in hundredths.
        let (t, d) = fat(2026, 12, 3, 16, 2, 10);
        assert_eq!(
            to_unix(t, d, 137),
            Timestamp {
                secs: 1_796_313_731,
                nsecs: 370_000_000
            }
        );
        // 2100-03-01 (2100 is no leap year) = 4107542400.
        let (t, d) = fat(2100, 3, 1, 0, 0, 0);
        assert_eq!(to_unix(t, d, 0).secs, 4_107_542_400);
        // A zero date reads as 1980-01-01 (month and day 0 taken as 1).
        assert_eq!(to_unix(0, 0, 0).secs, 315_532_800);
    }
}
