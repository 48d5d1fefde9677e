//! Creates that outlive their caller: RunPodSandbox and CreateContainer run in a task of their
//! own, so a kubelet deadline or a client cancel never stops one half-way. What it made is
//! handed to a retry with the same name (name and attempt), as CRI-O's resource store does:
//!
//! - A create registers its name here, with the new object's ID, before any work starts.
//! - Every caller asking for that name meanwhile (the first one and each retry) waits for
//!   the one outcome; no second create of the name starts.
//! - A failed create has removed what it made and released the name; its entry goes with it.
//! - A finished create whose callers all left is *unclaimed*: its record says so (hidden from
//!   List and Status), and it waits [`UNCLAIMED_TTL`] for a retry to claim it; after that it is
//!   removed, as kubelet never learnt of it. A daemon restart keeps it unclaimed (restore
//!   registers it again), so a retry after a restart still gets it.

use super::EngineError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long a finished create no caller took waits for a retry (CRI-O: one to two minutes).
pub const UNCLAIMED_TTL: Duration = Duration::from_secs(120);

type Outcome = Option<std::result::Result<String, EngineError>>;

/// The creates in progress, and the finished ones not yet claimed, by reserved name.
#[derive(Default)]
pub struct Creates {
    map: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    id: String,
    tx: Arc<watch::Sender<Outcome>>,
}

/// The create's side of its entry: whether anyone still waits, and where its outcome goes.
#[derive(Clone)]
pub struct Handoff(Arc<watch::Sender<Outcome>>);

impl Handoff {
    /// No caller waits any more: what the create makes now is unclaimed.
    pub fn unclaimed(&self) -> bool {
        self.0.receiver_count() == 0
    }

    fn send(&self, outcome: std::result::Result<String, EngineError>) {
        self.0.send_replace(Some(outcome));
    }
}

/// What [`Creates::join`] found.
pub enum Joined {
    /// A create of the name is running, or has finished unclaimed: wait for it.
    Existing(Waiter),
    /// No create of the name: this caller starts one, with this ID.
    New {
        id: String,
        waiter: Waiter,
        handoff: Handoff,
    },
}

/// One caller's wait for a create's outcome.
pub struct Waiter(watch::Receiver<Outcome>);

impl Waiter {
    pub async fn outcome(mut self) -> super::Result<String> {
        match self.0.wait_for(|o| o.is_some()).await {
            Ok(o) => o.clone().expect("waited for Some"),
            Err(_) => Err(EngineError::internal(
                "the create task ended without an outcome",
            )),
        }
    }
}

impl Creates {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the create of `name`, or registers a new one with the ID `start` returns (it
    /// reserves the name; its error is the caller's).
    pub fn join(
        &self,
        name: &str,
        start: impl FnOnce() -> super::Result<String>,
    ) -> super::Result<Joined> {
        let mut map = self.map();
        if let Some(e) = map.get(name) {
            return Ok(Joined::Existing(Waiter(e.tx.subscribe())));
        }
        let id = start()?;
        let tx = Arc::new(watch::channel(None).0);
        let waiter = Waiter(tx.subscribe());
        map.insert(
            name.to_string(),
            Entry {
                id: id.clone(),
                tx: tx.clone(),
            },
        );
        Ok(Joined::New {
            id,
            waiter,
            handoff: Handoff(tx),
        })
    }

    /// Registers a finished, unclaimed create (restore after a restart).
    pub fn adopt(&self, name: &str, id: &str) {
        let tx = Arc::new(watch::channel(Some(Ok(id.to_string()))).0);
        self.map().insert(
            name.to_string(),
            Entry {
                id: id.to_string(),
                tx,
            },
        );
    }

    /// The create of `name` (`id`) ended: every waiter gets the outcome; a failed one leaves.
    pub fn finish(
        &self,
        name: &str,
        id: &str,
        handoff: &Handoff,
        outcome: std::result::Result<String, EngineError>,
    ) {
        let failed = outcome.is_err();
        handoff.send(outcome);
        if failed {
            self.take(name, id);
        }
    }

    /// Removes the entry of `name` if it is `id`'s: true if this call removed it (a claim, an
    /// expiry, or the object's removal; whichever comes first wins).
    pub fn take(&self, name: &str, id: &str) -> bool {
        let mut map = self.map();
        if map.get(name).is_some_and(|e| e.id == id) {
            map.remove(name);
            true
        } else {
            false
        }
    }

    /// Names with an entry (for tests and `ferrio status`).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(id: &str) -> impl FnOnce() -> super::super::Result<String> + '_ {
        move || Ok(id.to_string())
    }

    #[tokio::test]
    async fn every_caller_of_a_name_gets_the_one_outcome() {
        let c = Creates::default();
        let Joined::New {
            id,
            waiter,
            handoff,
            ..
        } = c.join("n", reserve("a")).unwrap()
        else {
            panic!("first join starts the create")
        };
        let Joined::Existing(retry) = c.join("n", || panic!("no second reservation")).unwrap()
        else {
            panic!("second join waits")
        };
        assert!(!handoff.unclaimed());
        c.finish("n", &id, &handoff, Ok(id.clone()));
        assert_eq!(waiter.outcome().await.unwrap(), "a");
        assert_eq!(retry.outcome().await.unwrap(), "a");
        // Finished entries stay until taken.
        assert_eq!(c.len(), 1);
        assert!(c.take("n", "a"));
        assert!(!c.take("n", "a"), "taken once");
        assert_eq!(c.len(), 0);
    }

    #[tokio::test]
    async fn a_create_whose_callers_left_is_unclaimed_and_a_retry_gets_it() {
        let c = Creates::default();
        let Joined::New {
            id,
            waiter,
            handoff,
            ..
        } = c.join("n", reserve("a")).unwrap()
        else {
            panic!()
        };
        drop(waiter);
        assert!(handoff.unclaimed(), "the caller left");
        c.finish("n", &id, &handoff, Ok(id.clone()));
        let Joined::Existing(retry) = c.join("n", || panic!()).unwrap() else {
            panic!()
        };
        assert_eq!(retry.outcome().await.unwrap(), "a");
    }

    #[tokio::test]
    async fn a_failed_create_releases_the_name_and_its_waiters_get_the_error() {
        let c = Creates::default();
        let Joined::New {
            id,
            waiter,
            handoff,
            ..
        } = c.join("n", reserve("a")).unwrap()
        else {
            panic!()
        };
        c.finish(
            "n",
            &id,
            &handoff,
            Err(EngineError::invalid("no such command")),
        );
        let e = waiter.outcome().await.unwrap_err();
        assert_eq!(
            crate::error::ErrorKind::kind(&e),
            crate::error::Kind::InvalidArgument
        );
        assert!(matches!(
            c.join("n", reserve("b")).unwrap(),
            Joined::New { .. }
        ));
    }

    #[tokio::test]
    async fn a_reservation_error_is_the_callers_and_registers_nothing() {
        let c = Creates::default();
        let r = c.join("n", || Err(EngineError::invalid("reserved")));
        assert!(r.is_err());
        assert_eq!(c.len(), 0);
    }

    #[tokio::test]
    async fn an_adopted_create_is_handed_to_the_first_retry() {
        let c = Creates::default();
        c.adopt("n", "a");
        let Joined::Existing(w) = c.join("n", || panic!()).unwrap() else {
            panic!()
        };
        assert_eq!(w.outcome().await.unwrap(), "a");
        assert!(c.take("n", "a"));
    }

    #[tokio::test]
    async fn a_task_that_dies_gives_its_waiters_an_error() {
        let c = Creates::default();
        let Joined::New {
            waiter, handoff, ..
        } = c.join("n", reserve("a")).unwrap()
        else {
            panic!()
        };
        drop(handoff);
        c.take("n", "a");
        assert!(waiter.outcome().await.is_err());
    }
}
