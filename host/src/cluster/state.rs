//! The guard's state in the cluster: one ConfigMap per policy (`augur-state-<policy>`, in the
//! leader Lease's namespace, key `state.json`), written by the leader after each tick that
//! changed it (an optimistic update on its resourceVersion, or a create), and read by a
//! replica when it takes the Lease, so that cooldowns and the hourly count survive a
//! failover and a `rollout restart`. Cordons need nothing here: a node Augur cordoned carries
//! the annotation `augur.io/cordoned-by`.

use super::calls;
use super::leader::Fence;
use super::{MANAGER, status};
use crate::remediation::state::{GuardState, StateStore};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::Client;
use std::collections::BTreeMap;

/// The key of the state in its ConfigMap.
const KEY: &str = "state.json";

/// Guard state in ConfigMaps of one namespace.
pub struct ClusterState {
    api: Api<ConfigMap>,
    fence: Fence,
}

impl ClusterState {
    /// In `namespace` (the leader Lease's); writes pass `fence` (only the leader writes).
    pub fn new(client: Client, namespace: &str, fence: Fence) -> Self {
        Self { api: Api::namespaced(client, namespace), fence }
    }

    /// The ConfigMap of a policy's state.
    pub fn name(policy: &str) -> String {
        format!("augur-state-{policy}")
    }
}

#[async_trait]
impl StateStore for ClusterState {
    async fn load(&self, policy: &str) -> Result<Option<GuardState>, String> {
        let name = Self::name(policy);
        let api = &self.api;
        let found = calls::call(&format!("read ConfigMap {name}"), &self.fence, |_| api.get_opt(&name)).await.map_err(|e| e.to_string())?;
        let Some(text) = found.and_then(|c| c.data).and_then(|mut d| d.remove(KEY)) else { return Ok(None) };
        serde_json::from_str(&text).map(Some).map_err(|e| format!("ConfigMap {name}: {KEY} is not Augur's guard state: {e}"))
    }

    async fn save(&self, policy: &str, state: &GuardState) -> Result<(), String> {
        let name = Self::name(policy);
        let text = serde_json::to_string(state).map_err(|e| e.to_string())?;
        let params = PostParams { dry_run: false, field_manager: Some(MANAGER.into()) };
        let (api, name, text, params) = (&self.api, name.as_str(), text.as_str(), &params);
        calls::call(&format!("save the guard state in ConfigMap {name}"), &self.fence, |_| async move {
            let data = BTreeMap::from([(KEY.to_string(), text.to_string())]);
            match api.get_opt(name).await? {
                // The resourceVersion read makes the write optimistic: a conflict is retried.
                Some(mut current) => {
                    current.data = Some(data);
                    api.replace(name, params, &current).await.map(|_| ())
                }
                None => {
                    let mut fresh = ConfigMap { data: Some(data), ..Default::default() };
                    fresh.metadata.name = Some(name.to_string());
                    fresh.metadata.labels = Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), MANAGER.to_string())]));
                    match api.create(params, &fresh).await {
                        // Created meanwhile (a lost answer): the next attempt replaces it.
                        Err(e) if status(&e) == Some(409) => Err(e),
                        other => other.map(|_| ()),
                    }
                }
            }
        })
        .await
        .map_err(|e| e.to_string())
    }
}
