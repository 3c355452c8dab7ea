//! Whether a [`Schedule`] is open at a given instant.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;

use super::model::{FlowError, Schedule};

/// Whether `s` is open at `now`. The instant is taken to the schedule's time
/// zone (`timezone`, or `default_tz` when it has none); then, in order:
///
/// 1. a hold whose `until` (local time) is still ahead decides (`value`);
/// 2. a day within a holiday range (both ends included) is closed;
/// 3. it is open when a range for that weekday has `start <= time < end`.
///
/// Errors when the schedule cannot be read (unknown zone, malformed times);
/// [`check`] finds the same errors ahead of time.
pub fn is_open(s: &Schedule, now: DateTime<Utc>, default_tz: Tz) -> Result<bool, FlowError> {
    let err = |field: &str, reason: String| FlowError::Schedule {
        schedule: s.id.clone(),
        field: field.into(),
        reason,
    };
    let tz = match &s.timezone {
        Some(name) => parse_tz(name).map_err(|r| err("timezone", r))?,
        None => default_tz,
    };
    let local = now.with_timezone(&tz).naive_local();
    if let Some(hold) = &s.hold {
        let until = parse_local_time(&hold.until).map_err(|r| err("hold.until", r))?;
        if local < until {
            return Ok(hold.value);
        }
    }
    let today = local.date();
    for (i, h) in s.holidays.iter().enumerate() {
        let start = parse_date(&h.start).map_err(|r| err(&format!("holidays[{i}].start"), r))?;
        let end = parse_date(&h.end).map_err(|r| err(&format!("holidays[{i}].end"), r))?;
        if start <= today && today <= end {
            return Ok(false);
        }
    }
    let weekday = local.weekday().num_days_from_sunday();
    let secs = local.num_seconds_from_midnight();
    for (i, r) in s.ranges.iter().enumerate() {
        let start = parse_hhmm(&r.start).map_err(|e| err(&format!("ranges[{i}].start"), e))? * 60;
        let end = parse_hhmm(&r.end).map_err(|e| err(&format!("ranges[{i}].end"), e))? * 60;
        if u32::from(r.day) == weekday && start <= secs && secs < end {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks that a schedule can be read: a known IANA zone, days 0–6, `HH:MM`
/// times with start before end, `YYYY-MM-DD` holidays in order, and a
/// `YYYY-MM-DDTHH:MM:SS` hold.
pub fn check(s: &Schedule) -> Result<(), FlowError> {
    let err = |field: String, reason: String| FlowError::Schedule {
        schedule: s.id.clone(),
        field,
        reason,
    };
    if let Some(name) = &s.timezone {
        parse_tz(name).map_err(|r| err("timezone".into(), r))?;
    }
    for (i, r) in s.ranges.iter().enumerate() {
        if r.day > 6 {
            return Err(err(
                format!("ranges[{i}].day"),
                format!("{} is not 0 (Sunday) to 6 (Saturday)", r.day),
            ));
        }
        let start = parse_hhmm(&r.start).map_err(|e| err(format!("ranges[{i}].start"), e))?;
        let end = parse_hhmm(&r.end).map_err(|e| err(format!("ranges[{i}].end"), e))?;
        if end <= start {
            return Err(err(
                format!("ranges[{i}].end"),
                format!(
                    "{:?} is not after start {:?} (split a range over midnight into two days)",
                    r.end, r.start
                ),
            ));
        }
    }
    for (i, h) in s.holidays.iter().enumerate() {
        let start = parse_date(&h.start).map_err(|r| err(format!("holidays[{i}].start"), r))?;
        let end = parse_date(&h.end).map_err(|r| err(format!("holidays[{i}].end"), r))?;
        if end < start {
            return Err(err(
                format!("holidays[{i}].end"),
                format!("{:?} is before start {:?}", h.end, h.start),
            ));
        }
    }
    if let Some(hold) = &s.hold {
        parse_local_time(&hold.until).map_err(|r| err("hold.until".into(), r))?;
    }
    Ok(())
}

/// Parses an IANA time zone name.
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone"))
}

/// `HH:MM` as minutes since midnight; `24:00` is the end of the day.
fn parse_hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("{s:?} is not a date YYYY-MM-DD"))
}

/// `YYYY-MM-DDTHH:MM:SS` (seconds may be left out).
fn parse_local_time(s: &str) -> Result<NaiveDateTime, String> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .map_err(|_| format!("{s:?} is not a local time YYYY-MM-DDTHH:MM:SS"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::model::{DateRange, ScheduleHold, TimeRange};
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn weekdays_9_to_5(tz: Option<&str>) -> Schedule {
        Schedule {
            id: "hours".into(),
            name: "Business hours".into(),
            timezone: tz.map(Into::into),
            ranges: (1..=5)
                .map(|day| TimeRange {
                    day,
                    start: "09:00".into(),
                    end: "17:00".into(),
                })
                .collect(),
            holidays: vec![],
            hold: None,
            created_at: None,
            updated_at: None,
        }
    }

    const UTC: Tz = chrono_tz::UTC;

    #[test]
    fn new_york_monday_in_winter() {
        // 2025-01-06 is a Monday; New York is UTC-5 in January.
        let s = weekdays_9_to_5(Some("America/New_York"));
        check(&s).unwrap();
        assert!(!is_open(&s, at(2025, 1, 6, 13, 59), UTC).unwrap()); // 08:59
        assert!(is_open(&s, at(2025, 1, 6, 14, 1), UTC).unwrap()); // 09:01
        assert!(is_open(&s, at(2025, 1, 6, 21, 59), UTC).unwrap()); // 16:59
        assert!(!is_open(&s, at(2025, 1, 6, 22, 0), UTC).unwrap()); // 17:00, end excluded
                                                                    // Sunday 2025-01-05 at 10:00 local: no range.
        assert!(!is_open(&s, at(2025, 1, 5, 15, 0), UTC).unwrap());
        // The weekday is the local one: Tuesday 02:00Z is still Monday 21:00.
        let mut late = weekdays_9_to_5(Some("America/New_York"));
        late.ranges = vec![TimeRange {
            day: 1,
            start: "20:00".into(),
            end: "22:00".into(),
        }];
        assert!(is_open(&late, at(2025, 1, 7, 2, 0), UTC).unwrap());
    }

    #[test]
    fn no_timezone_uses_the_default() {
        let s = weekdays_9_to_5(None);
        let ny: Tz = "America/New_York".parse().unwrap();
        assert!(!is_open(&s, at(2025, 1, 6, 13, 59), ny).unwrap());
        assert!(is_open(&s, at(2025, 1, 6, 13, 59), UTC).unwrap());
    }

    #[test]
    fn paris_is_a_different_zone() {
        // Paris is UTC+1 in January: 08:30Z is 09:30 there, 03:30 in New York.
        let paris = weekdays_9_to_5(Some("Europe/Paris"));
        let ny = weekdays_9_to_5(Some("America/New_York"));
        assert!(is_open(&paris, at(2025, 1, 6, 8, 30), UTC).unwrap());
        assert!(!is_open(&ny, at(2025, 1, 6, 8, 30), UTC).unwrap());
        assert!(!is_open(&paris, at(2025, 1, 6, 7, 59), UTC).unwrap());
        // Summer time: UTC+2, so 07:30Z is 09:30 on Monday 2025-07-07.
        assert!(is_open(&paris, at(2025, 7, 7, 7, 30), UTC).unwrap());
    }

    #[test]
    fn a_holiday_is_closed() {
        let mut s = weekdays_9_to_5(Some("America/New_York"));
        s.holidays = vec![DateRange {
            start: "2025-12-24".into(),
            end: "2025-12-26".into(),
        }];
        check(&s).unwrap();
        // Wednesday 2025-12-24, Friday 12-26 at 12:00 local: closed.
        assert!(!is_open(&s, at(2025, 12, 24, 17, 0), UTC).unwrap());
        assert!(!is_open(&s, at(2025, 12, 26, 17, 0), UTC).unwrap());
        // Tuesday 12-23 and Monday 12-29: open.
        assert!(is_open(&s, at(2025, 12, 23, 17, 0), UTC).unwrap());
        assert!(is_open(&s, at(2025, 12, 29, 17, 0), UTC).unwrap());
        // The date is the local one: 12-27 01:00Z is still 12-26 in New York,
        // and a Friday evening range would be closed by the holiday.
        s.ranges.push(TimeRange {
            day: 5,
            start: "19:00".into(),
            end: "21:00".into(),
        });
        assert!(!is_open(&s, at(2025, 12, 27, 1, 0), UTC).unwrap());
    }

    #[test]
    fn a_hold_wins_until_it_ends() {
        let mut s = weekdays_9_to_5(Some("America/New_York"));
        s.hold = Some(ScheduleHold {
            value: false,
            until: "2025-01-06T12:00:00".into(),
        });
        check(&s).unwrap();
        // Monday 10:00 local: held closed.
        assert!(!is_open(&s, at(2025, 1, 6, 15, 0), UTC).unwrap());
        // 12:00 local: the hold has ended.
        assert!(is_open(&s, at(2025, 1, 6, 17, 0), UTC).unwrap());
        // A hold open wins over a holiday and over no range.
        s.hold = Some(ScheduleHold {
            value: true,
            until: "2025-01-06T00:00:00".into(),
        });
        s.holidays = vec![DateRange {
            start: "2025-01-05".into(),
            end: "2025-01-05".into(),
        }];
        assert!(is_open(&s, at(2025, 1, 5, 15, 0), UTC).unwrap());
        assert!(!is_open(&s, at(2025, 1, 6, 5, 0), UTC).unwrap());
    }

    #[test]
    fn unreadable_schedules_are_errors_naming_the_field() {
        let mut s = weekdays_9_to_5(Some("Mars/Olympus_Mons"));
        let e = check(&s).unwrap_err().to_string();
        assert!(e.contains("\"hours\"") && e.contains("timezone"), "{e}");
        assert!(is_open(&s, at(2025, 1, 6, 15, 0), UTC).is_err());
        s.timezone = None;
        s.ranges[2].end = "8:00".into();
        let e = check(&s).unwrap_err().to_string();
        assert!(e.contains("ranges[2].end"), "{e}");
        s.ranges[2].end = "08:00".into();
        let e = check(&s).unwrap_err().to_string();
        assert!(
            e.contains("ranges[2].end") && e.contains("not after"),
            "{e}"
        );
        s.ranges[2].end = "24:00".into();
        check(&s).unwrap();
        s.ranges[0].day = 7;
        assert!(check(&s).unwrap_err().to_string().contains("ranges[0].day"));
    }
}
