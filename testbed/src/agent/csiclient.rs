//! kubelet's side of CSI: a gRPC client on a node plugin's unix socket, reached through the
//! node's mount namespace, and the model's requests turned into CSI messages.

use std::path::PathBuf;

use csi::proto;
use csi::proto::identity_client::IdentityClient;
use csi::proto::node_client::NodeClient;
use hyper_util::rt::TokioIo;
use model::node::{AccessType, Capability, PublishRequest, StageRequest, UnpublishRequest, UnstageRequest};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};

/// A connection to one plugin.
#[derive(Clone)]
pub struct CsiClient {
    channel: Channel,
}

impl CsiClient {
    /// Connects to the socket at `path` (as the agent reaches it).
    pub async fn connect(path: PathBuf) -> Result<Self> {
        let shown = path.clone();
        // kubelet gives a CSI call 2 minutes (NodePublish may wait up to 30 s for the FUSE mount).
        let channel = Endpoint::try_from("http://[::]:50051")
            .map_err(|e| Error::Config(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(120))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
            .await
            .map_err(|e| Error::Io { op: "connect CSI socket", path: shown, source: std::io::Error::other(e) })?;
        Ok(Self { channel })
    }

    /// GetPluginInfo: the driver's name.
    pub async fn driver_name(&self) -> Result<String> {
        let reply = IdentityClient::new(self.channel.clone())
            .get_plugin_info(proto::GetPluginInfoRequest {})
            .await
            .map_err(|status| csi_error("GetPluginInfo", "", status))?;
        Ok(reply.into_inner().name)
    }

    /// NodeGetInfo: the plugin's node ID.
    pub async fn node_id(&self) -> Result<String> {
        let reply = NodeClient::new(self.channel.clone())
            .node_get_info(proto::NodeGetInfoRequest {})
            .await
            .map_err(|status| csi_error("NodeGetInfo", "", status))?;
        Ok(reply.into_inner().node_id)
    }

    /// NodeStageVolume.
    pub async fn stage(&self, request: &StageRequest) -> Result<()> {
        let message = proto::NodeStageVolumeRequest {
            volume_id: request.volume_id.clone(),
            staging_target_path: request.staging_target_path.clone(),
            volume_capability: request.capability.as_ref().map(capability),
            volume_context: request.volume_context.clone(),
            ..Default::default()
        };
        NodeClient::new(self.channel.clone())
            .node_stage_volume(message)
            .await
            .map_err(|status| csi_error("NodeStageVolume", &request.volume_id, status))?;
        Ok(())
    }

    /// NodePublishVolume.
    pub async fn publish(&self, request: &PublishRequest) -> Result<()> {
        let message = proto::NodePublishVolumeRequest {
            volume_id: request.volume_id.clone(),
            staging_target_path: request.staging_target_path.clone(),
            target_path: request.target_path.clone(),
            volume_capability: request.capability.as_ref().map(capability),
            readonly: request.readonly,
            volume_context: request.volume_context.clone(),
            ..Default::default()
        };
        NodeClient::new(self.channel.clone())
            .node_publish_volume(message)
            .await
            .map_err(|status| csi_error("NodePublishVolume", &request.volume_id, status))?;
        Ok(())
    }

    /// NodeUnpublishVolume.
    pub async fn unpublish(&self, request: &UnpublishRequest) -> Result<()> {
        let message = proto::NodeUnpublishVolumeRequest {
            volume_id: request.volume_id.clone(),
            target_path: request.target_path.clone(),
        };
        NodeClient::new(self.channel.clone())
            .node_unpublish_volume(message)
            .await
            .map_err(|status| csi_error("NodeUnpublishVolume", &request.volume_id, status))?;
        Ok(())
    }

    /// NodeUnstageVolume.
    pub async fn unstage(&self, request: &UnstageRequest) -> Result<()> {
        let message = proto::NodeUnstageVolumeRequest {
            volume_id: request.volume_id.clone(),
            staging_target_path: request.staging_target_path.clone(),
        };
        NodeClient::new(self.channel.clone())
            .node_unstage_volume(message)
            .await
            .map_err(|status| csi_error("NodeUnstageVolume", &request.volume_id, status))?;
        Ok(())
    }
}

fn csi_error(rpc: &'static str, volume: &str, status: tonic::Status) -> Error {
    Error::Csi { rpc, volume: volume.to_string(), status: Box::new(status) }
}

/// The CSI message of a capability.
fn capability(capability: &Capability) -> proto::VolumeCapability {
    use proto::volume_capability::{AccessType as Proto, BlockVolume, MountVolume};
    let access_type = match &capability.access_type {
        AccessType::Mount { mount_flags } => {
            Some(Proto::Mount(MountVolume { mount_flags: mount_flags.clone(), ..Default::default() }))
        }
        AccessType::Block => Some(Proto::Block(BlockVolume {})),
        AccessType::Unset => None,
    };
    let mode = capability.access_mode.map(|mode| proto::volume_capability::AccessMode { mode: mode.to_csi() });
    proto::VolumeCapability { access_type, access_mode: mode }
}
