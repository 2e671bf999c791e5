//! API calls spent per integration, today and this month, counted in Redis so every replica
//! adds to the same numbers (DingTalk meters some APIs per org per month, error 90020).
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `<p>usage:<integration>:<yyyymmdd>` | counter, TTL 3 days | calls sent that day |
//! | `<p>usage:<integration>:<yyyymm>` | counter, TTL 40 days | calls sent that month |
//!
//! Days and months are China Standard Time (UTC+8), DingTalk's calendar. Every attempt that
//! may have reached DingTalk counts, token fetches and retries included.

use redis::aio::ConnectionManager;
use time::{macros::offset, OffsetDateTime};

/// How long a day counter is kept.
const DAY_TTL_S: i64 = 3 * 24 * 3600;
/// How long a month counter is kept.
const MONTH_TTL_S: i64 = 40 * 24 * 3600;

/// `(yyyymmdd, yyyymm)` of `now` in China Standard Time.
pub fn periods(now: OffsetDateTime) -> (String, String) {
    let local = now.to_offset(offset!(+8));
    let month = format!("{:04}{:02}", local.year(), u8::from(local.month()));
    (format!("{month}{:02}", local.day()), month)
}

/// Adds one call for `integration`; returns the totals of today and this month.
pub async fn record(
    redis: &mut ConnectionManager,
    prefix: &str,
    integration: &str,
) -> Result<(u64, u64), redis::RedisError> {
    let (day, month) = periods(OffsetDateTime::now_utc());
    let day_key = format!("{prefix}usage:{integration}:{day}");
    let month_key = format!("{prefix}usage:{integration}:{month}");
    redis::pipe()
        .cmd("INCR")
        .arg(&day_key)
        .cmd("EXPIRE")
        .arg(&day_key)
        .arg(DAY_TTL_S)
        .ignore()
        .cmd("INCR")
        .arg(&month_key)
        .cmd("EXPIRE")
        .arg(&month_key)
        .arg(MONTH_TTL_S)
        .ignore()
        .query_async(redis)
        .await
}

/// The totals of today and this month for `integration` (0 for a period nothing was counted
/// in yet: a new day or month).
pub async fn read(
    redis: &mut ConnectionManager,
    prefix: &str,
    integration: &str,
) -> Result<(u64, u64), redis::RedisError> {
    let (day, month) = periods(OffsetDateTime::now_utc());
    let (today, this_month): (Option<u64>, Option<u64>) = redis::pipe()
        .get(format!("{prefix}usage:{integration}:{day}"))
        .get(format!("{prefix}usage:{integration}:{month}"))
        .query_async(redis)
        .await?;
    Ok((today.unwrap_or(0), this_month.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn periods_follow_china_standard_time() {
        assert_eq!(
            periods(datetime!(2024-01-31 15:59:59 UTC)),
            ("20240131".to_owned(), "202401".to_owned())
        );
        // 16:00 UTC is midnight in Beijing: already the next day and month.
        assert_eq!(
            periods(datetime!(2024-01-31 16:00:00 UTC)),
            ("20240201".to_owned(), "202402".to_owned())
        );
    }
}
