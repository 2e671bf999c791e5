//! `gatewayctl`, the operators' command line of the DingTalk gateway (docs/operations.md):
//! dead-letter inspection and replay ([`dlq`]) and the container health probe ([`probe`]).
//!
//! A crate of its own rather than a subcommand of a service: it links the notifier's record
//! layout and the dispatcher's command ids (so replay judges messages exactly as the services
//! do) without adding operator code to any service binary.

pub mod cli;
pub mod dlq;
pub mod probe;
