//! `gatewayctl probe URL`: the container health check. The runtime image has no shell and no
//! curl, so Compose's `healthcheck` runs this instead: a GET with a short timeout, success only
//! on a 2xx answer.

use std::time::Duration;

/// How long a probe may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer (refused, timed out, bad URL).
    #[error("no answer from {url}: {reason}")]
    Unreachable {
        /// The URL probed.
        url: String,
        /// What failed.
        reason: String,
    },
    /// An answer that is not 2xx (e.g. `/readyz` with a dependency down).
    #[error("{url} answered {status}: {body}")]
    Unhealthy {
        /// The URL probed.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, which names what is down.
        body: String,
    },
}

/// GETs `url`; `Ok` with the body on a 2xx answer.
pub async fn probe(url: &str) -> Result<String, ProbeError> {
    let unreachable = |reason: String| ProbeError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|err| unreachable(err.to_string()))?;
    let answer = client
        .get(url)
        .send()
        .await
        .map_err(|err| unreachable(err.to_string()))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(ProbeError::Unhealthy {
            url: url.to_owned(),
            status: status.as_u16(),
            body: body.chars().take(300).collect(),
        })
    }
}
