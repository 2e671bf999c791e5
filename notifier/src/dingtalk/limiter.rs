//! The distributed rate limiter: every replica takes permits from the same Redis keys, in one
//! Lua script per attempt (`limiter.lua`), so the budgets hold for the whole deployment.
//!
//! # Budgets (PROTOCOL §6.3)
//!
//! * per (app, API): the integration's `qps_limit` (default 20) per second — **never more in
//!   any one-second window**, since DingTalk counts per second;
//! * per egress IP, across all APIs and apps: `ip_budget` (10,000 per 20 s);
//! * per custom robot: `custom_robot_per_minute` (20) per rolling minute.
//!
//! # Algorithm
//!
//! A sliding-window log per budget: a sorted set of admission times taken from Redis `TIME`
//! (one clock for every replica). A call is admitted only if every log has fewer than `limit`
//! entries in the last `window`, and then it is recorded in all of them at once; otherwise the
//! script answers how long until every log has room. This is exact — every half-open interval
//! of length `window` holds at most `limit` admissions (the proof is in `limiter.lua`) — and
//! costs O(log n) per call with at most `limit` entries per key. Windows are lengthened by
//! `limiter_margin` so that the jitter between taking a permit and DingTalk counting the call
//! cannot push one of DingTalk's seconds over the limit.
//!
//! Ban keys (explicit windows from DingTalk: an IP ban, a custom robot's 10-minute penalty, a
//! per-minute limit) block their scope for every replica until they expire.
//!
//! # Redis keys (`<p>` = `key_prefix`, default `dtg:`)
//!
//! | key | type | content |
//! |-----|------|---------|
//! | `<p>limit:api:<client id>:<api>` | zset, TTL | admission times of one (app, API), shared by every integration of that app |
//! | `<p>limit:ip` | zset, TTL | admission times of every call from this egress |
//! | `<p>limit:robot:<sha256(token)[..16]>` | zset, TTL | admission times of one custom robot |
//! | `<p>limit:ban:ip`, `<p>limit:ban:<bucket>` | string, TTL | a ban in force |
//!
//! The script touches several keys, so it needs a single Redis (not a cluster).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use super::api::{Api, Target};
use super::classify::BanScope;
use super::DingTalkOptions;

/// One sliding-window log and its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// The Redis key.
    pub key: String,
    /// Admissions allowed in any window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
}

/// Everything one call is limited by: its bucket (for bans and pre-taken permits), the ban
/// keys to respect and the logs to take from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `api:<integration>:<api>`, `robot:<hash>:<api>` or `session:<api>`; never a secret.
    pub bucket: String,
    /// Ban keys that block this call.
    pub bans: Vec<String>,
    /// Logs to take a permit from.
    pub logs: Vec<Log>,
}

/// The per-second window, lengthened by the margin.
const SECOND: Duration = Duration::from_secs(1);
/// The custom robot's window.
const MINUTE: Duration = Duration::from_secs(60);

/// Which budgets apply to `api` called as `target`. Pure, so the key layout is unit-tested.
pub fn plan(target: &Target, api: Api, options: &DingTalkOptions) -> Plan {
    let p = &options.key_prefix;
    let margin = options.limiter_margin;
    let ip = Log {
        key: format!("{p}limit:ip"),
        limit: options.ip_budget.calls.max(1),
        window: options.ip_budget.per,
    };
    let ip_ban = format!("{p}limit:ban:ip");
    match target {
        Target::App(app) => {
            // DingTalk counts per app (AppKey), whichever integration uses it.
            let bucket = format!("api:{}:{}", app.client_id, api.name());
            Plan {
                bans: vec![ip_ban, format!("{p}limit:ban:{bucket}")],
                logs: vec![
                    Log {
                        key: format!("{p}limit:{bucket}"),
                        limit: app.qps_limit.max(1),
                        window: SECOND + margin,
                    },
                    ip,
                ],
                bucket,
            }
        }
        Target::CustomRobot { access_token, .. } => {
            let robot = format!("robot:{}", token_hash(access_token.expose()));
            Plan {
                bans: vec![ip_ban, format!("{p}limit:ban:{robot}")],
                logs: vec![
                    Log {
                        key: format!("{p}limit:{robot}"),
                        limit: options.custom_robot_per_minute.max(1),
                        window: MINUTE + margin,
                    },
                    ip,
                ],
                bucket: format!("{robot}:{}", api.name()),
            }
        }
        Target::SessionWebhook { .. } => Plan {
            bucket: format!("session:{}", api.name()),
            bans: vec![ip_ban],
            logs: vec![ip],
        },
    }
}

/// The ban key for a ban of `scope` on a call planned as `plan`.
pub fn ban_key(plan: &Plan, scope: BanScope, options: &DingTalkOptions) -> String {
    match scope {
        BanScope::Ip => format!("{}limit:ban:ip", options.key_prefix),
        // The robot's ban covers all its calls; an (app, API) ban only that API.
        BanScope::Bucket => plan
            .bans
            .last()
            .cloned()
            .unwrap_or_else(|| format!("{}limit:ban:ip", options.key_prefix)),
    }
}

/// A short, stable, non-reversible name for a custom robot token, for Redis keys.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Runs `limiter.lua` against Redis.
pub struct Limiter {
    script: redis::Script,
    next_member: AtomicU64,
    process: u64,
}

impl Limiter {
    /// Loads the script (sent by SHA, re-sent on `NOSCRIPT`).
    pub fn new() -> Self {
        Self {
            script: redis::Script::new(include_str!("limiter.lua")),
            next_member: AtomicU64::new(0),
            process: rand::random(),
        }
    }

    /// Takes one permit from every log of `plan` if all have room and no ban is in force;
    /// otherwise takes nothing and answers how long until one could be taken.
    pub async fn try_take(
        &self,
        redis: &mut ConnectionManager,
        plan: &Plan,
    ) -> Result<Result<(), Duration>, redis::RedisError> {
        let member = format!(
            "{:016x}-{}",
            self.process,
            self.next_member.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = self.script.prepare_invoke();
        for ban in &plan.bans {
            invocation.key(ban);
        }
        for log in &plan.logs {
            invocation.key(&log.key);
        }
        invocation.arg(plan.bans.len()).arg(member);
        for log in &plan.logs {
            invocation
                .arg(log.limit)
                .arg(u64::try_from(log.window.as_micros()).unwrap_or(u64::MAX));
        }
        let (taken, wait_us): (i64, i64) = invocation.invoke_async(redis).await?;
        Ok(if taken == 1 {
            Ok(())
        } else {
            Err(Duration::from_micros(
                u64::try_from(wait_us).unwrap_or(0).max(1),
            ))
        })
    }

    /// Blocks `key` for `duration` for every replica (a longer ban in force is kept).
    pub async fn ban(
        &self,
        redis: &mut ConnectionManager,
        key: &str,
        duration: Duration,
    ) -> Result<(), redis::RedisError> {
        let ms = u64::try_from(duration.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        // SET … PX, then only lengthen: PEXPIRE GT keeps a longer ban already in force.
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("PX")
            .arg(ms)
            .arg("NX")
            .query_async(redis)
            .await?;
        if set.is_none() {
            redis::cmd("PEXPIRE")
                .arg(key)
                .arg(ms)
                .arg("GT")
                .query_async::<i64>(redis)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::api::App;
    use common::secret::Secret;

    fn app(qps: u32) -> Target {
        Target::App(App {
            integration_id: "acme".into(),
            client_id: "dingA".into(),
            client_secret: Secret::new("s"),
            robot_code: "dingA".into(),
            qps_limit: qps,
        })
    }

    #[test]
    fn an_app_call_is_limited_per_app_and_api_and_per_ip() {
        let options = DingTalkOptions::default();
        let plan = plan(&app(20), Api::BatchSend, &options);
        assert_eq!(plan.bucket, "api:dingA:robot.batchSend");
        assert_eq!(
            plan.bans,
            [
                "dtg:limit:ban:ip",
                "dtg:limit:ban:api:dingA:robot.batchSend"
            ]
        );
        assert_eq!(
            plan.logs,
            [
                Log {
                    key: "dtg:limit:api:dingA:robot.batchSend".into(),
                    limit: 20,
                    window: Duration::from_millis(1100),
                },
                Log {
                    key: "dtg:limit:ip".into(),
                    limit: 10_000,
                    window: Duration::from_secs(20),
                },
            ]
        );
    }

    #[test]
    fn each_api_has_its_own_bucket() {
        let options = DingTalkOptions::default();
        let send = plan(&app(20), Api::BatchSend, &options);
        let group = plan(&app(20), Api::GroupSend, &options);
        assert_ne!(send.logs[0].key, group.logs[0].key);
        assert_eq!(send.logs[1].key, group.logs[1].key);
    }

    #[test]
    fn custom_robot_keys_never_contain_the_token() {
        let options = DingTalkOptions::default();
        let target = Target::CustomRobot {
            access_token: Secret::new("robot-token-123"),
            secret: None,
        };
        let plan = plan(&target, Api::CustomRobotSend, &options);
        assert_eq!(plan.logs[0].limit, 20);
        assert_eq!(plan.logs[0].window, Duration::from_millis(60_100));
        let text = format!("{plan:?}");
        assert!(!text.contains("robot-token-123"), "{text}");
        assert!(plan.logs[0].key.starts_with("dtg:limit:robot:"));
        assert_eq!(plan.logs[0].key.len(), "dtg:limit:robot:".len() + 16);
    }

    #[test]
    fn session_webhooks_only_spend_the_ip_budget() {
        let options = DingTalkOptions {
            key_prefix: "t:".into(),
            ..DingTalkOptions::default()
        };
        let plan = plan(
            &Target::SessionWebhook {
                url: "https://oapi.dingtalk.com/robot/sendBySession?session=x".into(),
            },
            Api::SessionWebhookSend,
            &options,
        );
        assert_eq!(plan.bans, ["t:limit:ban:ip"]);
        assert_eq!(plan.logs.len(), 1);
        assert_eq!(plan.logs[0].key, "t:limit:ip");
    }

    #[test]
    fn integrations_of_one_app_share_its_budget() {
        let options = DingTalkOptions::default();
        let Target::App(mut other) = app(20) else {
            unreachable!()
        };
        other.integration_id = "acme-eu".into();
        let first = plan(&app(20), Api::BatchSend, &options);
        let second = plan(&Target::App(other), Api::BatchSend, &options);
        assert_eq!(first.logs, second.logs);
        assert_eq!(first.bans, second.bans);
    }

    #[test]
    fn bans_go_to_the_bucket_or_the_ip() {
        let options = DingTalkOptions::default();
        let plan = plan(&app(20), Api::ListSimple, &options);
        assert_eq!(
            ban_key(&plan, BanScope::Bucket, &options),
            "dtg:limit:ban:api:dingA:user.listsimple"
        );
        assert_eq!(ban_key(&plan, BanScope::Ip, &options), "dtg:limit:ban:ip");
    }
}
