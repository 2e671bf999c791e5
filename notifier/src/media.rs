//! Fetching a file or image `url` for upload: only from hosts on `MEDIA_URL_ALLOWLIST`, at most
//! [`MAX_MEDIA_BYTES`], with a timeout. Anything else is a clear failure, never a silent skip.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::bus::result::ResultError;
use reqwest::Url;

/// Largest file the notifier fetches and uploads (DingTalk allows 20 MB; PROTOCOL §4.8).
pub const MAX_MEDIA_BYTES: usize = 10 * 1024 * 1024;
/// How long a download may take in total.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A downloaded file.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The bytes.
    pub bytes: Bytes,
    /// The content type the server declared (`application/octet-stream` when none).
    pub mime: String,
}

fn failure(code: &str, message: String, retryable: bool) -> ResultError {
    ResultError {
        code: code.to_owned(),
        message,
        retryable,
    }
}

/// Whether `url` may be fetched: http(s), and a host on the allowlist (`*.example.com` entries
/// match subdomains only; an entry without `:port` allows the scheme's default port only).
/// Pure.
pub fn allowed(url: &str, allowlist: &[String]) -> Result<Url, ResultError> {
    let refused = |why: String| {
        failure(
            "media_url_refused",
            format!(
                "{why}; allowed hosts (MEDIA_URL_ALLOWLIST): {}",
                if allowlist.is_empty() {
                    "none — send a media_id instead".to_owned()
                } else {
                    allowlist.join(", ")
                }
            ),
            false,
        )
    };
    let parsed = Url::parse(url).map_err(|err| refused(format!("{url:?} is not a URL ({err})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(refused(format!(
            "scheme {} is not http or https",
            parsed.scheme()
        )));
    }
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    // An entry without a port allows the scheme's default port only (`port()` is `None` for
    // it), so an allowed host's other services (a database, an admin port) stay out of reach.
    let port = parsed.port_or_known_default().unwrap_or_default();
    let host_port = format!("{host}:{port}");
    let names: &[&str] = if parsed.port().is_none() {
        &[&host_port, &host]
    } else {
        &[&host_port]
    };
    let ok = allowlist
        .iter()
        .any(|entry| match entry.strip_prefix("*.") {
            Some(domain) => names
                .iter()
                .any(|name| name.ends_with(&format!(".{domain}"))),
            None => names.contains(&entry.as_str()),
        });
    if ok {
        Ok(parsed)
    } else {
        Err(refused(format!("the host {host_port} is not allowed")))
    }
}

/// Downloads an allowed URL, refusing bodies over [`MAX_MEDIA_BYTES`] (by `Content-Length`
/// when given, else while reading).
pub async fn fetch(http: &reqwest::Client, url: Url) -> Result<Fetched, ResultError> {
    let shown = format!("{}{}", url.host_str().unwrap_or_default(), url.path());
    let download = async {
        let mut response = http.get(url).send().await.map_err(|err| {
            failure(
                "media_fetch_failed",
                // Without the URL reqwest appends: its query may hold a signature.
                format!("cannot fetch {shown}: {}", err.without_url()),
                true,
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(failure(
                "media_fetch_failed",
                format!("fetching {shown} answered HTTP {status}"),
                status.is_server_error(),
            ));
        }
        let too_large = || {
            failure(
                "media_too_large",
                format!("{shown} is larger than {MAX_MEDIA_BYTES} bytes (10 MiB), the largest file the notifier sends"),
                false,
            )
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_MEDIA_BYTES as u64)
        {
            return Err(too_large());
        }
        let mime = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| {
            failure(
                "media_fetch_failed",
                format!("reading {shown} failed: {}", err.without_url()),
                true,
            )
        })? {
            if body.len() + chunk.len() > MAX_MEDIA_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if body.is_empty() {
            return Err(failure(
                "media_fetch_failed",
                format!("{shown} is empty"),
                false,
            ));
        }
        Ok(Fetched {
            bytes: body.freeze(),
            mime,
        })
    };
    tokio::time::timeout(FETCH_TIMEOUT, download)
        .await
        .unwrap_or_else(|_| {
            Err(failure(
                "media_fetch_failed",
                format!(
                    "fetching {shown} took longer than {} s",
                    FETCH_TIMEOUT.as_secs()
                ),
                true,
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn only_allowlisted_hosts_are_fetched() {
        let allow = list(&["files.example.com", "*.cdn.example.net", "127.0.0.1:9300"]);
        assert!(allowed("https://files.example.com/a.pdf", &allow).is_ok());
        assert!(allowed("https://img.cdn.example.net/a.png", &allow).is_ok());
        assert!(allowed("http://127.0.0.1:9300/_sim/files/x", &allow).is_ok());
        assert!(
            allowed("https://files.example.com:443/a.pdf", &allow).is_ok(),
            "the default port"
        );
        let explicit = list(&["files.example.com:443"]);
        assert!(allowed("https://files.example.com/a.pdf", &explicit).is_ok());
        let ported = list(&["*.cdn.example.net:8443"]);
        assert!(allowed("https://img.cdn.example.net:8443/a.png", &ported).is_ok());
        assert!(allowed("https://img.cdn.example.net/a.png", &ported).is_err());
        for url in [
            "https://cdn.example.net/a.png",
            "https://files.example.com.evil.org/a",
            "ftp://files.example.com/a",
            "http://127.0.0.1:9301/x",
            "http://169.254.169.254/latest/meta-data",
            "http://files.example.com:6379/",
            "https://files.example.com:8443/a.pdf",
            "https://img.cdn.example.net:2375/containers",
        ] {
            assert_eq!(
                allowed(url, &allow).unwrap_err().code,
                "media_url_refused",
                "{url}"
            );
        }
        let err = allowed("https://files.example.com/a", &[]).unwrap_err();
        assert!(err.message.contains("send a media_id"), "{}", err.message);
    }
}
