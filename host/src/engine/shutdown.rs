//! Graceful shutdown, mini-redis style: one sender, many listeners. Tasks
//! stop scheduling new work when it fires; work in flight finishes.

use tokio::sync::watch;

/// Fires shutdown.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Listens for shutdown. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown fires.
    pub async fn fired(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// Sleeps for `d`; returns false if shutdown fired first.
    pub async fn sleep(&mut self, d: std::time::Duration) -> bool {
        if self.is_fired() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.fired() => false,
        }
    }
}
