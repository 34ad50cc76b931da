//! Layers: a sorted plan of entries (`plan`), written as a deterministic tar
//! (`tar`) through deterministic gzip or zstd (`compress`), with wheel files
//! spliced into gzip layers still deflated (`splice`), giving a `Layer` value.

pub mod compress;
pub(crate) mod path;
pub(crate) mod plan;
pub(crate) mod splice;
pub mod tar;

pub use path::ImagePath;
pub use plan::{Content, Entry, EntryKind, LayerPlan};

use crate::digest::Digest;
use serde::{Deserialize, Serialize};

pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A finished layer blob: always both its compressed digest and its diff_id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}
