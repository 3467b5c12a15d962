//! ferrofluid's CSI node plugin `fuse.csi.fluid.io`.
#![forbid(unsafe_code)]

/// Generated CSI v1 messages and services.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("csi.v1");
}
