//! The [`Client`] handle.

use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, kv_client::KvClient, maintenance_client::MaintenanceClient,
    AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeResponse, PutResponse, RangeResponse, StatusRequest, StatusResponse, TxnResponse,
};
use tonic::transport::{Channel, Endpoint};

use crate::kv::{Delete, Get, Put, Txn};
use crate::Error;

/// An async client for the etcd v3 KV and Maintenance services.
///
/// Cheap to clone: clones share one HTTP/2 connection. Every method takes
/// `&self`, so a client can be used from many tasks at once.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    kv: KvClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

impl Client {
    /// Connect to `endpoint`, e.g. `"http://127.0.0.1:2379"`.
    ///
    /// An endpoint without a scheme (`"127.0.0.1:2379"`) is taken as `http://`.
    /// Fails with [`Error::InvalidEndpoint`] if the string is not a usable URI and
    /// with [`Error::Transport`] if the connection cannot be made.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client, Error> {
        let endpoint = endpoint.into();
        let uri = if endpoint.contains("://") {
            endpoint.clone()
        } else {
            format!("http://{endpoint}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| Error::InvalidEndpoint(format!("{endpoint:?}: {e}")))?;
        let channel = endpoint.connect().await?;
        Ok(Self::from_channel(channel))
    }

    /// Wrap an existing channel (for custom TLS, timeouts, lazy connections...).
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            kv: KvClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel.clone()),
            channel,
        }
    }

    /// The underlying channel, to build raw tonic clients for other services
    /// (Watch, Lease, Cluster, Auth) from `cairn_client::proto::etcdserverpb`.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Starts watching (`Watch.Watch`); returns once the server created the watch.
    pub async fn watch(&self, watch: crate::Watch) -> Result<crate::Watcher, Error> {
        crate::Watcher::start(self.channel.clone(), watch).await
    }

    /// Read a key or range (`KV.Range`).
    pub async fn get(&self, get: Get) -> Result<RangeResponse, Error> {
        let mut kv = self.kv.clone();
        Ok(kv.range(get.into_request()).await?.into_inner())
    }

    /// Write a key (`KV.Put`).
    pub async fn put(&self, put: Put) -> Result<PutResponse, Error> {
        let mut kv = self.kv.clone();
        Ok(kv.put(put.into_request()).await?.into_inner())
    }

    /// Delete a key or range (`KV.DeleteRange`).
    pub async fn delete(&self, delete: Delete) -> Result<DeleteRangeResponse, Error> {
        let mut kv = self.kv.clone();
        Ok(kv.delete_range(delete.into_request()).await?.into_inner())
    }

    /// Run a transaction (`KV.Txn`).
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, Error> {
        let mut kv = self.kv.clone();
        Ok(kv.txn(txn.into_request()).await?.into_inner())
    }

    /// Drop history before `revision` (`KV.Compact`). With `physical`, the
    /// call returns only once the compaction has reached the backend.
    pub async fn compact(
        &self,
        revision: i64,
        physical: bool,
    ) -> Result<CompactionResponse, Error> {
        let mut kv = self.kv.clone();
        let req = CompactionRequest { revision, physical };
        Ok(kv.compact(req).await?.into_inner())
    }

    /// Status of the member we are connected to (`Maintenance.Status`).
    pub async fn status(&self) -> Result<StatusResponse, Error> {
        let mut maintenance = self.maintenance.clone();
        Ok(maintenance.status(StatusRequest {}).await?.into_inner())
    }

    /// List active alarms on all members (`Maintenance.Alarm` with action GET).
    pub async fn alarms(&self) -> Result<AlarmResponse, Error> {
        let mut maintenance = self.maintenance.clone();
        let req = AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: AlarmType::None as i32,
        };
        Ok(maintenance.alarm(req).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_endpoint_is_invalid_endpoint() {
        match Client::connect("http://[::1").await {
            Err(Error::InvalidEndpoint(msg)) => assert!(msg.contains("[::1")),
            other => panic!("expected InvalidEndpoint, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn from_lazy_channel_is_clone() {
        // connect_lazy does no I/O until the first call.
        let channel = Endpoint::from_static("http://127.0.0.1:2379").connect_lazy();
        let client = Client::from_channel(channel);
        let _other = client.clone();
        let _raw = client.channel();
    }
}
