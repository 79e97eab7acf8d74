//! `ksd-testbed`: the doubles that let the project's integration tests run real binaries
//! against real protocols on one machine.
//!
//! - [`apiserver`]: a Kubernetes API server double (list, watch, discovery, fault injection)
//!   that kube-rs and the real `kubectl` talk to.
//! - [`slices`]: builders for Services and pods, and an EndpointSlice maker that slices the way
//!   the EndpointSlice controller does.
//! - [`s3`]: moto's S3 server behind a counting, fault-injecting proxy, a bucket per test.
//! - [`process`]: running the project's binaries as child processes, waiting for conditions.

pub mod apiserver;
pub mod process;
pub mod s3;
pub mod slices;
