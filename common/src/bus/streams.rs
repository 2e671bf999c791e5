//! The four JetStream streams of the bus, provisioned idempotently by every service at start-up.
//!
//! All use file storage and limits retention (events have several consumers, so not work-queue),
//! with an explicit max age, max size and duplicate window. Provisioning only ever grows a stream:
//! an operator who enlarged a limit or added replicas keeps them (see [`reconcile`]).

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;

use super::subjects;
use crate::config::StreamSettings;

/// Inbound events from the ingress.
pub const EVENTS: &str = "DINGTALK_EVENTS";
/// Commands for the notifier.
pub const COMMANDS: &str = "DINGTALK_COMMANDS";
/// Results of commands.
pub const RESULTS: &str = "DINGTALK_RESULTS";
/// Dead letters of every stage.
pub const DLQ: &str = "DINGTALK_DLQ";

/// Why the streams could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// JetStream did not answer or refused.
    #[error("cannot provision stream {stream}: {message}")]
    JetStream {
        /// The stream name.
        stream: String,
        /// JetStream's description.
        message: String,
    },
    /// The stream exists with settings that cannot be changed in place.
    #[error("stream {stream} exists with {found}, the gateway needs {needed}; recreate it or fix it by hand")]
    Incompatible {
        /// The stream name.
        stream: String,
        /// The existing setting.
        found: String,
        /// The setting the gateway needs.
        needed: String,
    },
}

/// The configuration the gateway wants for each stream.
pub fn desired(settings: &StreamSettings) -> Vec<Config> {
    let stream = |name: &str, subject: &str, description: &str, max_age: Duration| Config {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        subjects: vec![subject.to_owned()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age,
        max_bytes: settings.max_bytes,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        ..Default::default()
    };
    vec![
        stream(
            EVENTS,
            subjects::EVENTS_ALL,
            "Normalized DingTalk callbacks (bus contract v1)",
            settings.max_age,
        ),
        stream(
            COMMANDS,
            subjects::COMMANDS_ALL,
            "Commands for the notifier (bus contract v1)",
            settings.max_age,
        ),
        stream(
            RESULTS,
            subjects::RESULTS_ALL,
            "One result per command (bus contract v1)",
            settings.max_age,
        ),
        stream(
            DLQ,
            subjects::DLQ_ALL,
            "Messages a stage gave up on, with the reason in headers",
            settings.dlq_max_age,
        ),
    ]
}

/// Creates the streams that are missing and grows the ones below the desired limits.
pub async fn provision(js: &Context, settings: &StreamSettings) -> Result<(), ProvisionError> {
    for wanted in desired(settings) {
        let name = wanted.name.clone();
        let jetstream_error = |err: &dyn std::fmt::Display| ProvisionError::JetStream {
            stream: name.clone(),
            message: err.to_string(),
        };
        match js.get_stream(&name).await {
            Ok(mut stream) => {
                let existing = stream
                    .info()
                    .await
                    .map_err(|err| jetstream_error(&err))?
                    .config
                    .clone();
                if let Some(update) = reconcile(&existing, &wanted)? {
                    tracing::info!(stream = %name, "growing stream limits to the configured values");
                    js.update_stream(update)
                        .await
                        .map_err(|err| jetstream_error(&err))?;
                }
            }
            Err(err) if is_not_found(&err) => {
                js.create_stream(wanted)
                    .await
                    .map_err(|err| jetstream_error(&err))?;
                tracing::info!(stream = %name, "stream created");
            }
            Err(err) => return Err(jetstream_error(&err)),
        }
    }
    Ok(())
}

fn is_not_found(err: &async_nats::jetstream::context::GetStreamError) -> bool {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    matches!(err.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Decides how an existing stream must change to meet `wanted` without ever shrinking it:
/// `None` when it already does. Limits take the larger value (0 or -1 mean unlimited in
/// JetStream and win), subjects are the union, replicas the larger count. Storage and retention
/// cannot change in place, so a mismatch is an error for a human.
pub fn reconcile(existing: &Config, wanted: &Config) -> Result<Option<Config>, ProvisionError> {
    let incompatible = |found: String, needed: String| ProvisionError::Incompatible {
        stream: existing.name.clone(),
        found,
        needed,
    };
    if existing.storage != wanted.storage {
        return Err(incompatible(
            format!("storage {:?}", existing.storage),
            format!("storage {:?}", wanted.storage),
        ));
    }
    if existing.retention != wanted.retention {
        return Err(incompatible(
            format!("retention {:?}", existing.retention),
            format!("retention {:?}", wanted.retention),
        ));
    }
    let mut next = existing.clone();
    next.max_age = larger_duration_limit(existing.max_age, wanted.max_age);
    next.max_bytes = larger_count_limit(existing.max_bytes, wanted.max_bytes);
    next.duplicate_window = existing.duplicate_window.max(wanted.duplicate_window);
    next.num_replicas = existing.num_replicas.max(wanted.num_replicas);
    for subject in &wanted.subjects {
        if !next.subjects.contains(subject) {
            next.subjects.push(subject.clone());
        }
    }
    let changed = next.max_age != existing.max_age
        || next.max_bytes != existing.max_bytes
        || next.duplicate_window != existing.duplicate_window
        || next.num_replicas != existing.num_replicas
        || next.subjects != existing.subjects;
    Ok(changed.then_some(next))
}

/// A zero max age means "keep forever" in JetStream.
fn larger_duration_limit(a: Duration, b: Duration) -> Duration {
    if a.is_zero() || b.is_zero() {
        Duration::ZERO
    } else {
        a.max(b)
    }
}

/// A negative (or zero) byte limit means "unlimited" in JetStream.
fn larger_count_limit(a: i64, b: i64) -> i64 {
    if a <= 0 || b <= 0 {
        -1
    } else {
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(settings: &StreamSettings) -> Config {
        desired(settings).remove(0)
    }

    #[test]
    fn the_four_streams_cover_the_four_subject_trees() {
        let streams = desired(&StreamSettings::default());
        let names: Vec<_> = streams
            .iter()
            .map(|s| (s.name.as_str(), s.subjects[0].as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (EVENTS, "dingtalk.events.>"),
                (COMMANDS, "dingtalk.commands.>"),
                (RESULTS, "dingtalk.results.>"),
                (DLQ, "dingtalk.dlq.>"),
            ]
        );
        assert!(streams.iter().all(|s| s.storage == StorageType::File
            && s.retention == RetentionPolicy::Limits
            && s.duplicate_window == Duration::from_secs(600)));
    }

    #[test]
    fn an_identical_stream_needs_no_change() {
        let wanted = events(&StreamSettings::default());
        assert!(reconcile(&wanted, &wanted).unwrap().is_none());
    }

    #[test]
    fn limits_an_operator_enlarged_are_kept() {
        let wanted = events(&StreamSettings::default());
        let mut existing = wanted.clone();
        existing.max_age = wanted.max_age * 4;
        existing.max_bytes = -1;
        existing.num_replicas = 3;
        existing.duplicate_window = Duration::from_secs(3600);
        existing.subjects.push("legacy.events.>".to_owned());
        assert!(reconcile(&existing, &wanted).unwrap().is_none());
    }

    #[test]
    fn smaller_limits_grow_to_the_configured_values() {
        let settings = StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        };
        let wanted = events(&settings);
        let mut existing = wanted.clone();
        existing.max_age = Duration::from_secs(60);
        existing.num_replicas = 1;
        existing.subjects = vec!["other.>".to_owned()];
        let next = reconcile(&existing, &wanted).unwrap().unwrap();
        assert_eq!(next.max_age, wanted.max_age);
        assert_eq!(next.num_replicas, 3);
        assert_eq!(next.subjects, ["other.>", "dingtalk.events.>"]);
    }

    #[test]
    fn a_memory_stream_is_reported_not_rebuilt() {
        let wanted = events(&StreamSettings::default());
        let mut existing = wanted.clone();
        existing.storage = StorageType::Memory;
        let err = reconcile(&existing, &wanted).unwrap_err();
        assert!(err.to_string().contains("storage Memory"), "{err}");
    }
}
