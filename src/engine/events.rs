//! Container lifecycle events (CRI GetContainerEvents, evented PLEG): CREATED, STARTED,
//! STOPPED, DELETED, broadcast to every subscriber as they happen. Pods have them too, as
//! containerd sends them: the event's container ID is the pod's ID (CREATED and STARTED when
//! RunPodSandbox is done — a pod without an infra container is started once made —, STOPPED
//! by StopPodSandbox, DELETED by RemovePodSandbox, with the pod's status as it was).
//!
//! STOPPED comes from the monitor itself: each created container has a task holding a `Wait`
//! request on its monitor's socket, answered the moment the container exits — no polling. A
//! subscriber that falls more than [`CAPACITY`] events behind is dropped (and counted) rather
//! than slowing the daemon.

use super::{ContainerState, Engine};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Events a subscriber may fall behind before it is dropped.
pub const CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct Event {
    /// The container's ID, or the pod's for a pod's own event.
    pub container_id: String,
    pub pod_id: String,
    pub kind: EventKind,
    pub at_ns: i64,
    /// A pod's own event: the pod as it was when the event happened (a removed pod is gone
    /// from the engine by the time a subscriber reads its DELETED).
    pub pod: Option<Arc<super::PodRecord>>,
}

impl Engine {
    pub(super) fn emit(&self, container_id: &str, pod_id: &str, kind: EventKind) {
        // No subscriber is fine: send only fails when nobody listens.
        let _ = self.events.send(Event {
            container_id: container_id.to_string(),
            pod_id: pod_id.to_string(),
            kind,
            at_ns: super::now_ns(),
            pod: None,
        });
    }

    /// A pod's own event (its ID as the container ID).
    pub(super) fn emit_pod(&self, rec: &super::PodRecord, kind: EventKind) {
        let _ = self.events.send(Event {
            container_id: rec.id.clone(),
            pod_id: rec.id.clone(),
            kind,
            at_ns: super::now_ns(),
            pod: Some(Arc::new(rec.clone())),
        });
    }

    /// A new subscription to the event stream.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Counts a subscriber dropped for falling behind.
    pub fn count_dropped_subscriber(&self) {
        self.events_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped_subscribers(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }

    /// Watches a container's monitor until the container exits, then records the exit and
    /// emits STOPPED. One cheap task per live container.
    pub(super) fn watch_exit(self: &Arc<Self>, id: &str) {
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let sock = this.ctr_paths(&id).monitor_socket();
            if let Err(e) = this.monitor(&id).wait(None).await {
                tracing::debug!(container = %id, error = %e, "exit watch ended without an answer");
            }
            // The exit file is written before the monitor answers; a monitor that died
            // without one is handled as after a restart.
            let before = this.container(&id).map(|c| c.state);
            if matches!(
                before,
                Some(ContainerState::Created | ContainerState::Running)
            ) {
                let after = this.refreshed(&id).map(|c| c.state);
                if after != Some(ContainerState::Exited) && !sock.exists() {
                    this.refresh_after_restart(&id).await;
                }
            }
            if let Some(c) = this.container(&id) {
                if c.state == ContainerState::Exited {
                    this.emit(&id, &c.pod_id, EventKind::Stopped);
                }
            }
        });
    }
}
