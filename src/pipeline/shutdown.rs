//! SIGTERM / SIGINT as a shared flag: the consume loop, the retry loops and their backoff sleeps
//! all see it, so a stop request is honoured within a bounded time even while a batch is being
//! retried against a service that is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    set: AtomicBool,
    notify: Notify,
    signal: std::sync::Mutex<Option<&'static str>>,
}

impl Shutdown {
    /// A flag set when the process receives SIGTERM or SIGINT.
    pub fn on_signals() -> Shutdown {
        let s = Shutdown::default();
        let t = s.clone();
        tokio::spawn(async move {
            let name = signal().await;
            t.trigger(name);
        });
        s
    }

    pub fn trigger(&self, name: &'static str) {
        *self.inner.signal.lock().expect("shutdown lock") = Some(name);
        self.inner.set.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.inner.set.load(Ordering::SeqCst)
    }

    /// Resolves once a stop was requested, with the signal's name.
    pub async fn wait(&self) -> &'static str {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_set() {
                return self.inner.signal.lock().expect("shutdown lock").unwrap_or("stop");
            }
            notified.await;
        }
    }

    /// Sleeps for `d` unless a stop is requested first; true when stopping.
    pub async fn sleep_or_stop(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_set(),
            _ = self.wait() => true,
        }
    }
}

/// Resolves on SIGINT (ctrl-c) or SIGTERM (what Kubernetes and Container Apps send), naming it.
async fn signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_cuts_a_backoff_sleep_short() {
        let s = Shutdown::default();
        let t = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            t.trigger("SIGTERM");
        });
        let started = std::time::Instant::now();
        assert!(s.sleep_or_stop(Duration::from_secs(30)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(s.wait().await, "SIGTERM");
    }
}
