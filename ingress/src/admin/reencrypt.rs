//! `ingress reencrypt-secrets`: re-seals every stored integration's secrets with the current
//! `SECRETS_KEY`, after a key rotation or after turning encryption on.
//!
//! Run it once the new key is `SECRETS_KEY` and the old one `SECRETS_KEY_PREVIOUS` on every
//! service; afterwards `SECRETS_KEY_PREVIOUS` can be removed. It reads the same configuration
//! as the service, so it is run from the same deployment (e.g. `kubectl exec … ingress
//! reencrypt-secrets`).

use std::process::ExitCode;

use common::config::Env;
use common::registry::{Registry, SECRETS_KEY_VAR};

use crate::Config;

/// The subcommand's name on the command line.
pub const COMMAND: &str = "reencrypt-secrets";

/// Runs the subcommand: 0 on success, 2 for a configuration error, 1 when Redis or a stored
/// record cannot be used. Progress goes to stdout, errors to stderr.
pub async fn main(env: &Env) -> ExitCode {
    let config = match Config::from_env(env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ingress {COMMAND}: {err}");
            return ExitCode::from(2);
        }
    };
    let secrets = &config.common.registry.secrets;
    if !secrets.is_encrypting() {
        eprintln!(
            "ingress {COMMAND}: {SECRETS_KEY_VAR} is not set, so secrets stay unencrypted; \
             set it to base64 of 32 random bytes (`openssl rand -base64 32`) first"
        );
        return ExitCode::from(2);
    }
    let registry =
        match Registry::connect(&config.common.redis_url, config.common.registry.clone()).await {
            Ok(registry) => registry,
            Err(err) => {
                eprintln!(
                    "ingress {COMMAND}: cannot open the registry at REDIS_URL={}: {err}",
                    common::config::redact_url(&config.common.redis_url)
                );
                return ExitCode::FAILURE;
            }
        };
    let result = registry.reencrypt_all().await;
    registry.shutdown().await;
    match result {
        Ok(report) => {
            println!(
                "re-encrypted {} integration(s) with key {}; {} already used it",
                report.rewritten,
                secrets.current_key_id().map_or("(none)", |id| id.as_str()),
                report.already_current
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ingress {COMMAND}: {err}");
            ExitCode::FAILURE
        }
    }
}
