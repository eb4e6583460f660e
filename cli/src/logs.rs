//! `tributary logs`: a job's log with readable UTC timestamps, and with
//! `--follow`, new lines as they come until the job ends.

use std::time::Duration;

use crate::client::Api;

/// Lines asked for per page.
const PAGE: i64 = 1000;

/// How often `--follow` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Prints the log of job `id`; with `follow`, keeps printing new lines
/// until the job is terminal (then prints what is left and returns).
pub async fn print(api: &Api, id: &str, follow: bool) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        // Checked before the last drain: the lines a phase logged commit
        // with (or before) its outcome, so none can follow a terminal status.
        let terminal = follow && api.job(id).await?["terminal"].as_bool().unwrap_or(false);
        after = drain(api, id, after).await?;
        if !follow || terminal {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Prints every line after `after`; returns the last line's id.
async fn drain(api: &Api, id: &str, mut after: i64) -> anyhow::Result<i64> {
    loop {
        let page = api.logs(id, after, PAGE).await?;
        let lines = page["logs"].as_array().cloned().unwrap_or_default();
        for l in &lines {
            println!(
                "{} {:5} {}",
                l["at_ms"].as_i64().map(utc).unwrap_or_default(),
                l["level"].as_str().unwrap_or(""),
                l["message"].as_str().unwrap_or("")
            );
            after = l["id"].as_i64().unwrap_or(after);
        }
        if (lines.len() as i64) < PAGE {
            return Ok(after);
        }
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC, to the millisecond:
/// `2026-11-23T14:05:01.123Z`.
pub fn utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// The (year, month, day) of a day number since 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_446_301_123, "2026-11-23T15:05:01.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(utc(ms), text);
        }
    }
}
