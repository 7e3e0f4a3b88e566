use std::{
    marker::PhantomData,
    sync::{Arc, Mutex},
    time::Duration,
    vec,
};

use burn_communication::{CommunicationChannel, Message, Protocol, ProtocolClient};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, RwLock};

use crate::{GlobalCollectiveError, NodeId, node::base::NodeState};

/// Handles the status of sync requests from other nodes
pub(crate) struct SyncService<P: Protocol> {
    /// Current node's state, shared with the thread that does aggregations
    node_state: Arc<RwLock<Option<NodeState>>>,
    /// The number of peers that have requested to sync with us since the last successful sync.
    syncing_peers: Mutex<Vec<NodeId>>,
    /// Notification on each incoming sync request
    sync_notif: Notify,
    /// How long a sync waits for the other nodes (new in the vendored copy).
    timeout: Duration,

    _p: PhantomData<P>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SyncRequest(NodeId);

impl<P: Protocol> SyncService<P> {
    pub fn new(node_state: Arc<RwLock<Option<NodeState>>>, timeout: Duration) -> Self {
        Self {
            node_state,
            syncing_peers: Mutex::new(vec![]),
            sync_notif: Notify::new(),
            timeout,
            _p: PhantomData,
        }
    }

    fn add_syncing_peer(&self, peer: NodeId) {
        // A poisoned lock still holds a valid list: the push cannot be half done.
        let mut syncing_peers = self.syncing_peers.lock().unwrap_or_else(|e| e.into_inner());
        syncing_peers.push(peer);
    }

    /// Sync with all peers. Fails when a peer cannot be told, or when not every node has
    /// asked within the timeout (0.21.0 panicked or waited forever).
    pub async fn sync(&self) -> Result<(), GlobalCollectiveError> {
        // we can't sync while we register
        let node_state = self.node_state.read().await;
        let Some(node_state) = node_state.as_ref() else {
            return Err(GlobalCollectiveError::AllReduceBeforeRegister);
        };

        // this peer is syncing
        self.add_syncing_peer(node_state.node_id);
        for (id, addr) in &node_state.nodes {
            if *id == node_state.node_id {
                continue;
            }
            let failed = |cause: String| GlobalCollectiveError::PeerFailed {
                address: addr.clone(),
                cause,
            };
            let told = async {
                let mut connection = P::Client::connect(addr.clone(), "sync")
                    .await
                    .ok_or_else(|| failed("cannot connect to its sync server".into()))?;
                let sync_bytes = rmp_serde::to_vec(&SyncRequest(node_state.node_id))
                    .map_err(|err| failed(err.to_string()))?;
                connection
                    .send(Message::new(sync_bytes.into()))
                    .await
                    .map_err(|err| failed(format!("sending the sync request failed: {err:?}")))
            };
            tokio::time::timeout(self.timeout, told)
                .await
                .map_err(|_| failed(format!("no sync connection within {:?}", self.timeout)))??;
        }
        let mut all_node_ids = node_state.nodes.keys().cloned().collect::<Vec<_>>();
        all_node_ids.sort();
        let waited = tokio::time::timeout(self.timeout, self.wait_for_all(&all_node_ids)).await;
        waited.map_err(|_| {
            let syncing = self.syncing_peers.lock().unwrap_or_else(|e| e.into_inner());
            let missing = node_state
                .nodes
                .iter()
                .filter(|(id, _)| !syncing.contains(id))
                .map(|(_, address)| address.to_string())
                .collect::<Vec<_>>();
            GlobalCollectiveError::Timeout {
                waiting_for: format!("the sync of the nodes at {}", missing.join(", ")),
                after: self.timeout,
            }
        })
    }

    /// Waits until every node of `all_node_ids` has asked to sync.
    async fn wait_for_all(&self, all_node_ids: &[NodeId]) {
        loop {
            // Created before the check: `notify_waiters` wakes a `Notified` from its creation
            // on, so a request arriving between the check and the wait is not missed.
            let arrived = self.sync_notif.notified();
            {
                // Every node has asked once: this sync is done. Take one request of each node
                // out of the shared list (burn-collective 0.21.0 cleared a copy of it, so the
                // second sync never completed; see vendor/README.md). A node already asking
                // for the next sync keeps its request.
                let mut syncing_peers =
                    self.syncing_peers.lock().unwrap_or_else(|e| e.into_inner());
                if all_node_ids.iter().all(|id| syncing_peers.contains(id)) {
                    for id in all_node_ids {
                        if let Some(at) = syncing_peers.iter().position(|p| p == id) {
                            syncing_peers.remove(at);
                        }
                    }
                    return;
                }
            }
            // Wait for the next sync to come in
            arrived.await
        }
    }

    /// A peer's sync request. A peer that goes away or sends something else is logged and
    /// ignored (0.21.0 panicked); its node then times out in `sync`.
    pub async fn handle_sync_connection<C: CommunicationChannel>(&self, mut channel: C) {
        let msg = match channel.recv().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return,
            Err(err) => {
                log::warn!("A sync connection failed: {err:?}");
                return;
            }
        };
        let msg = match rmp_serde::from_slice::<SyncRequest>(&msg.data) {
            Ok(msg) => msg,
            Err(err) => {
                log::warn!("Expected a sync request: {err}");
                return;
            }
        };

        self.add_syncing_peer(msg.0);

        self.sync_notif.notify_waiters();
    }
}
