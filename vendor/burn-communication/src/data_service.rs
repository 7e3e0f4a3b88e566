//! This module enables direct data transfer between servers without blocking the client or any server.
//!
//! It eliminates the need for intermediate data transfer through the client, avoiding the process of downloading data from one server and reuploading it to another.
//!
//! The module provides an optimized mechanism for servers to communicate directly, streamlining data movement between them without involving the client.

use crate::Message;
use crate::base::Protocol;
use crate::base::{Address, CommunicationChannel, ProtocolClient, ProtocolServer};
use burn_tensor::{TensorData, backend::Backend};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, marker::PhantomData, sync::Arc, time::Duration};
use tokio::sync::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorTransferId(u64);

impl From<u64> for TensorTransferId {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

impl TensorTransferId {
    pub fn next(&mut self) {
        self.0 += 1;
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum DataServiceMessage {
    TensorRequest(TensorTransferId),
    Tensor(TensorData),
}

type ClientChannelRef<C> = Arc<Mutex<<C as ProtocolClient>::Channel>>;

pub struct TensorDataService<B: Backend, P: Protocol<Client: ProtocolClient>> {
    /// Maps tensor transfer IDs to their exposed state.
    pub exposed_tensors: Mutex<HashMap<TensorTransferId, TensorExposeState>>,
    /// Maps node addresses to their channels.
    pub channels: Mutex<HashMap<Address, ClientChannelRef<P::Client>>>,
    /// Notify when a new tensor is exposed.
    pub new_tensor_notify: Arc<Notify>,

    cancel_token: CancellationToken,
    /// How long a download waits for its peer.
    timeout: Duration,

    _phantom_data: PhantomData<B>,
}

pub struct TensorExposeState {
    /// The bytes of the tensor data message. Message::Data(...) serialized with rmp_serde
    pub bytes: bytes::Bytes,
    /// How many times the tensor will be downloaded
    pub max_downloads: u32,
    /// How man times the tensor has been downloaded
    pub cur_download_count: u32,
}

/// Provides a routing function for a tensor data service for a communications server
pub trait TensorDataServer<B: Backend, P: Protocol> {
    /// Routes the tensor data service to the "/data" route
    fn route_tensor_data_service(self, state: Arc<TensorDataService<B, P>>) -> Self;
}

impl<B: Backend, S: ProtocolServer + Sized, P: Protocol<Server = S> + 'static>
    TensorDataServer<B, P> for S
{
    fn route_tensor_data_service(self, state: Arc<TensorDataService<B, P>>) -> Self {
        self.route("/data", async move |stream: S::Channel| {
            state.handle_data_channel(stream).await;
        })
    }
}

impl<B: Backend, P: Protocol> TensorDataService<B, P> {
    pub fn new(cancel_token: CancellationToken) -> Self {
        Self {
            exposed_tensors: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            new_tensor_notify: Arc::new(Notify::new()),
            cancel_token,
            timeout: DEFAULT_TIMEOUT,
            _phantom_data: PhantomData::<B>,
        }
    }

    /// Exposes a tensor to the data server, allowing it to be downloaded by other nodes.
    pub async fn expose(
        &self,
        tensor: B::FloatTensorPrimitive,
        max_downloads: u32,
        transfer_id: TensorTransferId,
    ) {
        let data = B::float_into_data(tensor).await.unwrap();
        self.expose_data(data, max_downloads, transfer_id).await
    }

    /// Exposes a tensor data to the data server, allowing it to be downloaded by other nodes.
    pub async fn expose_data(
        &self,
        tensor_data: TensorData,
        max_downloads: u32,
        transfer_id: TensorTransferId,
    ) {
        let bytes: bytes::Bytes = rmp_serde::to_vec(&DataServiceMessage::Tensor(tensor_data))
            .unwrap()
            .into();
        let mut exposed_tensors = self.exposed_tensors.lock().await;
        exposed_tensors.insert(
            transfer_id,
            TensorExposeState {
                bytes,
                max_downloads,
                cur_download_count: 0,
            },
        );
        core::mem::drop(exposed_tensors);
        self.new_tensor_notify.notify_waiters();
    }

    pub async fn close(&self) {
        // Send a closing message to every open WebSocket stream. A peer that is already gone
        // has nothing to be told: its stream is dropped (0.21.0 panicked on it).
        let mut streams = self.channels.lock().await;
        for (address, stream) in streams.drain() {
            let mut stream = stream.lock().await;
            if let Err(err) = stream.close().await {
                log::warn!("Closing the data stream to {address:?} failed: {err:?}");
            }
        }
    }

    /// How long a download waits for its peer (connecting, sending the request and receiving
    /// the tensor, together) before it gives up: [`DEFAULT_TIMEOUT`] unless set.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Downloads a tensor that is exposed on another server. Requires a Tokio 1.x runtime
    ///
    /// Fails when the peer cannot be reached, closes or loses the connection, sends something
    /// else, or sends nothing within the timeout ([`Self::with_timeout`]). A failed download
    /// forgets its connection, so a later one connects anew.
    pub async fn download_tensor(
        &self,
        remote: Address,
        transfer_id: TensorTransferId,
    ) -> Result<TensorData, DownloadError> {
        log::info!("Downloading tensor from {remote:?}");
        let result = tokio::time::timeout(self.timeout, self.download(&remote, transfer_id))
            .await
            .unwrap_or(Err(DownloadError::Timeout(self.timeout)));
        if let Err(err) = &result {
            log::warn!("Download from {remote:?} failed: {err}");
            self.channels.lock().await.remove(&remote);
        }
        result
    }

    async fn download(
        &self,
        remote: &Address,
        transfer_id: TensorTransferId,
    ) -> Result<TensorData, DownloadError> {
        let stream = self.get_data_stream(remote).await?;
        let mut stream = stream.lock().await;

        // Send the download request with the download id
        let request = rmp_serde::to_vec(&DataServiceMessage::TensorRequest(transfer_id))
            .map_err(|err| DownloadError::InvalidMessage(err.to_string()))?;
        stream
            .send(Message::new(request.into()))
            .await
            .map_err(|err| DownloadError::Closed(format!("{err:?}")))?;

        let msg = stream
            .recv()
            .await
            .map_err(|err| DownloadError::Closed(format!("{err:?}")))?
            .ok_or_else(|| DownloadError::Closed("the peer closed the connection".into()))?;
        match rmp_serde::from_slice(&msg.data) {
            Ok(DataServiceMessage::Tensor(data)) => Ok(data),
            Ok(other) => Err(DownloadError::InvalidMessage(format!("{other:?}"))),
            Err(err) => Err(DownloadError::InvalidMessage(err.to_string())),
        }
    }

    /// Get the WebSocket stream for the given address, or create a new one if it doesn't exist.
    async fn get_data_stream(&self, address: &Address) -> Result<ClientChannelRef<P::Client>, DownloadError> {
        let mut streams = self.channels.lock().await;
        if let Some(stream) = streams.get(address) {
            return Ok(stream.clone());
        }
        // Open a new WebSocket connection to the address
        let stream = P::Client::connect(address.clone(), "data")
            .await
            .ok_or(DownloadError::Unreachable)?;
        let stream = Arc::new(Mutex::new(stream));
        streams.insert(address.clone(), stream.clone());
        Ok(stream)
    }

    /// Get the requested exposed tensor data, and update download counter
    async fn get_exposed_tensor_bytes(&self, transfer_id: TensorTransferId) -> bytes::Bytes {
        loop {
            // Created before the map is checked: `notify_waiters` wakes a `Notified` from its
            // creation on, so a tensor exposed between the check and the wait is not missed.
            // (burn-communication 0.21.0 created it after the check: a lost wake-up that
            // hangs the ring all-reduce between processes; see vendor/README.md.)
            let exposed = self.new_tensor_notify.notified();
            {
                let mut exposed_tensors = self.exposed_tensors.lock().await;
                // take the tensor out of the hashmap while we download
                if let Some(mut exposed_state) = exposed_tensors.remove(&transfer_id) {
                    exposed_state.cur_download_count += 1;
                    let bytes = if exposed_state.cur_download_count == exposed_state.max_downloads {
                        exposed_state.bytes
                    } else {
                        let bytes = exposed_state.bytes.clone();
                        exposed_tensors.insert(transfer_id, exposed_state);
                        bytes
                    };
                    return bytes;
                }
            }
            // No matching tensor, wait for a new one to come in.
            exposed.await;
        }
    }

    /// Handle incoming connections for downloading tensors. A peer that goes away, or sends
    /// something else than a request, ends its connection, not the process (0.21.0 panicked).
    pub(crate) async fn handle_data_channel(
        &self,
        mut channel: <P::Server as ProtocolServer>::Channel,
    ) {
        log::info!("[Data Handler] New connection for download.");

        while !self.cancel_token.is_cancelled() {
            let msg = match channel.recv().await {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    log::info!("Closed connection");
                    return;
                }
                Err(err) => {
                    log::warn!("[Data Handler] The peer's connection failed: {err:?}");
                    return;
                }
            };
            let transfer_id = match rmp_serde::from_slice(&msg.data) {
                Ok(DataServiceMessage::TensorRequest(transfer_id)) => transfer_id,
                other => {
                    log::warn!("[Data Handler] Expected a tensor request, got {other:?}");
                    return;
                }
            };
            let bytes = self.get_exposed_tensor_bytes(transfer_id).await;
            if let Err(err) = channel.send(Message::new(bytes)).await {
                log::warn!("[Data Handler] Sending a tensor failed: {err:?}");
                return;
            }
        }
        log::info!("[Data Service] Closing connection for download.");
    }
}

/// How long a download waits for its peer unless [`TensorDataService::with_timeout`] says
/// otherwise (PyTorch's process groups wait minutes; a peer on a network answers in seconds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why [`TensorDataService::download_tensor`] got no tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadError {
    /// No connection could be made to the peer's data server.
    Unreachable,
    /// The peer closed or lost the connection before the tensor came (with the cause).
    Closed(String),
    /// The peer sent something that is not the tensor.
    InvalidMessage(String),
    /// Nothing came within the timeout.
    Timeout(Duration),
}

impl core::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unreachable => write!(f, "cannot connect to the peer's data server"),
            Self::Closed(cause) => write!(f, "the connection closed: {cause}"),
            Self::InvalidMessage(what) => write!(f, "expected a tensor, got {what}"),
            Self::Timeout(after) => write!(f, "no tensor within {after:?}"),
        }
    }
}

impl std::error::Error for DownloadError {}
