//! Events (events.k8s.io/v1), where `kubectl describe` and `kubectl get events` show them:
//! one Event each, never folded into a series (kube's `Recorder` folds repeats of a reason on
//! an object into one that keeps the first note, which would lose every later reason).

use super::calls;
use super::leader::Fence;
use super::{MANAGER, status};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

/// An Event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What an Event says.
#[derive(Debug, Clone)]
pub struct Note<'a> {
    pub type_: EventType,
    /// Why, in UpperCamelCase, e.g. `Scaled`, `InvalidSpec`.
    pub reason: &'a str,
    /// What was done, in UpperCamelCase.
    pub action: &'a str,
    /// For a person; cut at 1000 bytes.
    pub note: &'a str,
}

/// Publishes Events as this replica of Augur.
#[derive(Clone)]
pub struct Events {
    client: Client,
    /// This replica's name (`reportingInstance`).
    instance: String,
}

impl Events {
    pub fn new(client: Client, instance: &str) -> Self {
        Self { client, instance: instance.to_string() }
    }

    /// Publishes one Event on `regarding`; `what` names it in a warning if it cannot be.
    /// Retried like any write, within `fence`; its name is fixed before the first attempt, so
    /// a retry after a lost answer meets the first (409 AlreadyExists) and publishes no second.
    pub async fn publish(&self, regarding: ObjectReference, what: &str, said: Note<'_>, fence: &Fence) {
        let mut note = said.note.to_string();
        note.truncate(note.floor_char_boundary(1000));
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!("{}.augur-{:x}", regarding.name.as_deref().unwrap_or("object"), now.as_nanosecond());
        let event = Event {
            metadata: kube::api::ObjectMeta { name: Some(name), namespace: Some(namespace.clone()), ..Default::default() },
            event_time: Some(MicroTime(now)),
            type_: Some(said.type_.as_str().into()),
            reason: Some(said.reason.into()),
            action: Some(said.action.into()),
            note: Some(note),
            regarding: Some(regarding),
            reporting_controller: Some(MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let (events, event) = (&events, &event);
        let published = calls::call(&format!("publish the Event for {what}"), fence, |_| async move {
            match events.create(&PostParams::default(), event).await {
                Err(e) if status(&e) == Some(409) => Ok(()),
                other => other.map(|_| ()),
            }
        })
        .await;
        if let Err(e) = published {
            tracing::warn!("cannot publish the Event for {what}: {e}");
        }
    }
}
