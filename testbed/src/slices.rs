//! Services, pods and EndpointSlices for tests.
//!
//! - [`service`] builds a `Service` the way a manifest would declare it.
//! - [`Pod`] is what the EndpointSlice controller reads from a pod: its IPs, readiness,
//!   node and zone.
//! - [`endpoint_slices`] turns a Service and its pods into the EndpointSlices the controller
//!   writes; [`custom_slice`] builds a slice some other controller manages (for Services
//!   without a selector).
//! - [`TestApiServer::set_endpoints`](crate::apiserver::TestApiServer::set_endpoints) and
//!   [`scale`] replace a Service's slices in a server, which is what scaling a deployment
//!   looks like to a watcher.
//!
//! Each of these has a module of its own: `service`, `pod`, `controller` (what the
//! EndpointSlice controller writes), `custom` and `scale` (writing slices to a server).

mod controller;
mod custom;
mod pod;
mod scale;
mod service;

pub use controller::endpoint_slices;
pub use custom::{SliceBuilder, custom_slice};
pub use pod::{Pod, PodIp, ready_pods};
pub use scale::scale;
pub use service::{ServiceBuilder, service};

/// The label that ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that names the controller managing a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The EndpointSlice controller's value of [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// At most this many endpoints go into one slice (the controller's default
/// `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

#[cfg(test)]
mod tests;
