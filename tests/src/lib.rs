//! Cross-service tests live in `tests/tests/`; this library holds what they, the fault suite and
//! the `bench` load runs share: the whole gateway started on one machine ([`stack`]).

pub mod stack;
