//! Free loopback addresses.

use std::net::{SocketAddr, TcpListener};

/// A loopback address on a port that was free a moment ago. Another process can take it
/// before ours binds it; the start-up checks then fail loudly instead of hanging.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// The port of [`free_addr`].
pub fn free_port() -> u16 {
    free_addr().port()
}
