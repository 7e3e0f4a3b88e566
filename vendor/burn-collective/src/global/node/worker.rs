use std::{collections::HashMap, marker::PhantomData, sync::Arc, time::Duration};

use burn_communication::{Address, CommunicationChannel, Message, ProtocolClient};
use tokio::{
    runtime::Runtime,
    sync::{
        Mutex,
        mpsc::{Receiver, Sender},
    },
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::global::shared::{
    CollectiveMessage, CollectiveMessageResponse, GlobalCollectiveError, RemoteRequest,
    RemoteResponse, RequestId, SessionId,
};

/// Worker that handles communication with the orchestrator for global collective operations.
///
/// The vendored copy (see vendor/README.md) bounds every wait on the orchestrator by the
/// configured timeout, and a lost connection fails the waiting requests with
/// [`GlobalCollectiveError::OrchestratorLost`] instead of panicking or hanging.
pub(crate) struct GlobalClientWorker<P: ProtocolClient> {
    handle: Option<JoinHandle<Result<(), GlobalCollectiveError>>>,
    cancel_token: CancellationToken,
    request_sender: Sender<ClientRequest>,
    state: Arc<Mutex<GlobalClientWorkerState>>,
    timeout: Duration,
    global_address: Address,
    _phantom_data: PhantomData<P>,
}

// Rename
struct GlobalClientWorkerState {
    requests: HashMap<RequestId, Sender<RemoteResponse>>,
    /// Why the connection to the orchestrator is gone, once it is: no request is taken after.
    lost: Option<String>,
}

impl GlobalClientWorkerState {
    fn new() -> Self {
        Self {
            requests: HashMap::new(),
            lost: None,
        }
    }

    /// The connection is gone: every waiting request is answered by dropping its callback.
    fn lose(&mut self, cause: String) {
        log::warn!("Lost the orchestrator: {cause}");
        self.lost.get_or_insert(cause);
        self.requests.clear();
    }
}

#[derive(Debug)]
pub(crate) struct ClientRequest {
    pub request: RemoteRequest,
    pub callback: Sender<RemoteResponse>,
}

impl ClientRequest {
    pub(crate) fn new(request: RemoteRequest, callback: Sender<RemoteResponse>) -> Self {
        Self { request, callback }
    }
}

impl<C: ProtocolClient> GlobalClientWorker<C> {
    /// Create a new global client worker and start the tasks.
    pub(crate) fn new(
        runtime: &Runtime,
        cancel_token: CancellationToken,
        global_address: &Address,
        timeout: Duration,
    ) -> Self {
        let (request_sender, request_recv) = tokio::sync::mpsc::channel::<ClientRequest>(10);

        let state = Arc::new(Mutex::new(GlobalClientWorkerState::new()));

        let handle = runtime.spawn(Self::start(
            state.clone(),
            cancel_token.clone(),
            global_address.clone(),
            request_recv,
            timeout,
        ));

        Self {
            handle: Some(handle),
            cancel_token,
            request_sender,
            state,
            timeout,
            global_address: global_address.clone(),
            _phantom_data: PhantomData,
        }
    }

    /// Start the global client tasks
    async fn start(
        state: Arc<Mutex<GlobalClientWorkerState>>,
        cancel_token: CancellationToken,
        global_address: Address,
        request_recv: Receiver<ClientRequest>,
        timeout: Duration,
    ) -> Result<(), GlobalCollectiveError> {
        // Init the connection, retrying once a second for at most `timeout`.
        let retries = timeout.as_secs().clamp(1, u32::MAX as u64) as u32;
        let (request, response) = match Self::init_connection(&global_address, retries).await {
            Ok(streams) => streams,
            Err(err) => {
                state.lock().await.lose(format!(
                    "cannot connect to the orchestrator at {global_address} within {timeout:?}"
                ));
                return Err(err);
            }
        };

        // Websocket async worker loading responses from the server.
        let response_handle = tokio::spawn(Self::response_loader(
            state.clone(),
            response,
            cancel_token.clone(),
        ));

        // Channel async worker sending operations to the server.
        let request_handle = tokio::spawn(Self::request_sender(
            request_recv,
            state,
            request,
            cancel_token.clone(),
        ));

        if let Err(e) = response_handle.await {
            log::error!("Response handler failed: {e:?}");
        }
        if let Err(e) = request_handle.await {
            log::error!("Request handler failed: {e:?}");
        }

        Ok(())
    }

    async fn init_connection(
        address: &Address,
        retries: u32,
    ) -> Result<(C::Channel, C::Channel), GlobalCollectiveError> {
        let session_id = SessionId::new();

        let stream_request = tokio::spawn(Self::connect_with_retry(
            address.clone(),
            "request",
            std::time::Duration::from_secs(1),
            Some(retries),
            session_id,
        ));
        let stream_response = tokio::spawn(Self::connect_with_retry(
            address.clone(),
            "response",
            std::time::Duration::from_secs(1),
            Some(retries),
            session_id,
        ));

        let Ok(Some(request)) = stream_request.await else {
            return Err(GlobalCollectiveError::OrchestratorUnreachable);
        };
        let Ok(Some(response)) = stream_response.await else {
            return Err(GlobalCollectiveError::OrchestratorUnreachable);
        };

        Ok((request, response))
    }

    /// Connect with websocket with retries.
    async fn connect_with_retry(
        address: Address,
        route: &str,
        retry_pause: Duration,
        retry_max: Option<u32>,
        session_id: SessionId,
    ) -> Option<C::Channel> {
        let mut retries = 0;
        loop {
            if let Some(max) = retry_max
                && retries >= max
            {
                log::warn!("Failed to connect to {address} after {max} retries.");
                return None;
            }

            // Try to connect to the request address.
            println!("Connecting to {address} ...");
            let result = C::connect(address.clone(), route).await;

            if let Some(mut stream) = result {
                let init_msg = CollectiveMessage::Init(session_id);
                let bytes: bytes::Bytes = rmp_serde::to_vec(&init_msg).ok()?.into();
                if let Err(err) = stream.send(Message::new(bytes)).await {
                    log::warn!("Sending the init message to {address} failed: {err:?}");
                    return None;
                }
                return Some(stream);
            }

            println!("Failed to connect to {address}, retrying... Attempt #{retries}");
            tokio::time::sleep(retry_pause).await;
            retries += 1;
        }
    }

    /// Unregister the worker and close the connection. Returns when the orchestrator is gone
    /// or does not answer within the timeout, with the error (0.21.0 waited forever).
    pub(crate) async fn close_connection(&mut self) -> Result<(), GlobalCollectiveError> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        // Un-register from server
        let resp = self.request(RemoteRequest::Finish).await;
        self.cancel_token.cancel();
        let resp = match resp {
            Ok(RemoteResponse::FinishAck) => Ok(()),
            Ok(other) => {
                log::error!("Requested to finish, did not get FinishAck; got {other:?}");
                Err(GlobalCollectiveError::WrongOrchestratorResponse)
            }
            Err(err) => Err(err),
        };
        if resp.is_err() {
            // The connection tasks may be stuck on a dead socket: do not wait for them.
            handle.abort();
            return resp;
        }
        match handle.await {
            Ok(Err(e)) => log::error!("Connection error {e:?}"),
            Err(e) => log::error!("Connection task failed: {e:?}"),
            Ok(Ok(())) => {}
        }
        Ok(())
    }

    async fn response_loader(
        state: Arc<Mutex<GlobalClientWorkerState>>,
        mut stream_response: C::Channel,
        cancel_token: CancellationToken,
    ) {
        loop {
            tokio::select! {
                // Check if the cancel token is cancelled
                _ = cancel_token.cancelled() => {
                    break;
                }
                // .. Or get a message from the websocket
                response = stream_response.recv() => {
                    match response {
                        Err(err) => {
                            state.lock().await.lose(format!("the connection failed: {err:?}"));
                            break;
                        }
                        Ok(None) => {
                            state.lock().await.lose("it closed the connection".to_string());
                            break;
                        }
                        Ok(Some(response)) => {
                            let response: CollectiveMessageResponse =
                                match rmp_serde::from_slice(&response.data) {
                                    Ok(response) => response,
                                    Err(err) => {
                                        state.lock().await.lose(format!(
                                            "it sent an unreadable message: {err}"
                                        ));
                                        break;
                                    }
                                };
                            let callback = state
                                .lock()
                                .await
                                .requests
                                .get(&response.request_id)
                                .cloned();
                            match callback {
                                // The requester may have given up (timeout): nothing to do.
                                Some(callback) => {
                                    let _ = callback.send(response.content).await;
                                }
                                None => log::warn!("A response to an unknown request"),
                            }
                        }
                    }
                }
            }
        }

        log::info!("Worker closing connection");
        if let Err(err) = stream_response.close().await {
            log::warn!("Closing the response stream failed: {err:?}");
        }
    }

    async fn request_sender(
        mut request_recv: Receiver<ClientRequest>,
        worker: Arc<Mutex<GlobalClientWorkerState>>,
        mut stream_request: C::Channel,
        cancel_token: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel_token.cancelled() => {
                    break;
                },
                request = request_recv.recv() => {
                    let Some(request) = request else {
                        continue;
                    };

                    let id = RequestId::new();

                    // Register the callback, unless the connection is gone (then dropping
                    // it answers the requester).
                    {
                        let mut state = worker.lock().await;
                        if state.lost.is_some() {
                            continue;
                        }
                        state.requests.insert(id, request.callback);
                    }

                    let request = CollectiveMessage::Request(id, request.request);
                    let sent = match rmp_serde::to_vec::<CollectiveMessage>(&request) {
                        Ok(bytes) => stream_request
                            .send(Message::new(bytes.into()))
                            .await
                            .map_err(|err| format!("sending a request failed: {err:?}")),
                        Err(err) => Err(format!("a request could not be written: {err}")),
                    };
                    if let Err(cause) = sent {
                        worker.lock().await.lose(cause);
                    }
                }
            }
        }

        log::info!("Worker closing connection");
        if let Err(err) = stream_request.close().await {
            log::warn!("Closing the request stream failed: {err:?}");
        }
    }

    /// Sends `req` to the orchestrator and waits for its answer, at most the timeout.
    pub(crate) async fn request(
        &self,
        req: RemoteRequest,
    ) -> Result<RemoteResponse, GlobalCollectiveError> {
        let what = match req {
            RemoteRequest::Register { .. } => "registering: it answers when every node has",
            RemoteRequest::Finish => "leaving",
        };
        let what = format!("the orchestrator at {} ({what})", self.global_address);
        let (callback, mut response_recv) = tokio::sync::mpsc::channel::<RemoteResponse>(10);
        let client_req = ClientRequest::new(req, callback);
        let answer = async {
            self.request_sender.send(client_req).await.ok()?;
            response_recv.recv().await
        };
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => {
                let lost = self.state.lock().await.lost.clone();
                Err(GlobalCollectiveError::OrchestratorLost(
                    lost.unwrap_or_else(|| "its connection has stopped".to_string()),
                ))
            }
            Err(_) => Err(GlobalCollectiveError::Timeout {
                waiting_for: what,
                after: self.timeout,
            }),
        }
    }
}
