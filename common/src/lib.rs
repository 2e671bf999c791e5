//! Shared building blocks of the DingTalk gateway.
//!
//! Every service (ingress, dispatcher, notifier) stands on these modules; they hold no
//! service-specific logic.

pub mod bus;
pub mod cards;
pub mod config;
pub mod crypto;
pub mod ops;
pub mod redis;
pub mod registry;
pub mod runtime;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
