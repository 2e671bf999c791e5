//! Graceful shutdown, made explicit.
//!
//! `main` waits for SIGTERM or Ctrl-C ([`signal`]) and cancels one [`Shutdown`] token. Every
//! long-running task holds a clone: listeners stop accepting, consumers stop pulling and let
//! in-flight messages finish (or leave them un-acked so JetStream redelivers them), and `main`
//! waits for all of them at most `SHUTDOWN_TIMEOUT`.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The shutdown signal broadcast to every task of a service. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A token that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder to stop.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether shutdown has been asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once shutdown has been asked for.
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// A child token: triggering it stops only its holders, triggering the parent stops both.
    pub fn child(&self) -> Self {
        Self(self.0.child_token())
    }

    /// Runs `work` at once and then every `interval` (a late run delays the next ones rather
    /// than bunching them) until shutdown is asked for.
    pub async fn every<F, Fut>(&self, interval: Duration, mut work: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.wait() => return,
                _ = ticks.tick() => work().await,
            }
        }
    }
}

/// Completes on SIGTERM (what Kubernetes and Docker send) or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Waits for `work` to finish, at most `limit`; returns whether it finished in time.
pub async fn drain(work: impl Future<Output = ()>, limit: Duration) -> bool {
    match tokio::time::timeout(limit, work).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "in-flight work did not finish in time; un-acked messages will be redelivered"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn triggering_wakes_every_clone_and_child() {
        let shutdown = Shutdown::new();
        let clone = shutdown.clone();
        let child = shutdown.child();
        let waiter = tokio::spawn(async move {
            clone.wait().await;
            child.wait().await;
        });
        shutdown.trigger();
        waiter.await.unwrap();
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn every_runs_at_once_and_stops_with_shutdown() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let shutdown = Shutdown::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (shutdown, runs) = (shutdown.clone(), runs.clone());
            async move {
                shutdown
                    .every(Duration::from_millis(10), || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        async {}
                    })
                    .await;
            }
        });
        while runs.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("every returns on shutdown")
            .unwrap();
        let after = runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), after, "no run after shutdown");
    }

    #[tokio::test]
    async fn drain_reports_work_that_overruns_its_bound() {
        assert!(drain(async {}, Duration::from_millis(50)).await);
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert!(!drain(slow, Duration::from_millis(20)).await);
    }
}
