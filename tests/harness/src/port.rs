//! Free TCP ports for the servers.
//!
//! The machine may already run NATS on 4222 and Redis on 6379, and tests run in parallel, so no
//! port is ever assumed free: the kernel hands one out and we release it for the server to bind.
//! Another process can take it in between; callers handle that by retrying with a new port.

use std::net::{Ipv4Addr, TcpListener};

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("a bound listener has a local address")
        .port()
}
