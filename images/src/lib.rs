//! Coracle images: the OCI image model, layer codecs, hardened unpack, the device's
//! content-addressed store and delta layers. Synchronous code, no async runtime.
//!
//! Main types: [`Digest`] (sha256, parsed once), [`oci::Manifest`]/[`oci::Index`]/
//! [`oci::ImageConfig`], [`import::ImageSource`] (OCI layout, oci-archive, docker-archive),
//! [`unpack::unpack_layer`] (hostile tar → `layers/<diff_id>/` or nothing),
//! [`store::Store`] (content addressed, refcounts, GC under a budget, free-space preflight,
//! resumable partial downloads), [`skeleton`] (a layer's tar headers, kept for deltas) and
//! [`delta`] (encode/apply delta layers); [`challenge`] parses registries' `WWW-Authenticate`
//! for the agent's and the controller's registry clients.
//!
//! Limits: only sha256 digests; PAX xattrs in layers are not restored; overlay whiteouts need
//! root or kernel >= 5.8 (see [`unpack::OverlayXattrs`]).

pub mod challenge;
pub mod codec;
pub mod delta;
pub mod digest;
pub mod import;
pub mod layer_index;
pub mod media_type;
pub mod oci;
pub mod skeleton;
pub mod store;
pub mod unpack;

pub use digest::Digest;
