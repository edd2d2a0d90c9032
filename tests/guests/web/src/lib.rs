//! The `web` guest's portable half: HTTP/1.1 request parsing and the
//! responses the server sends ([`http`]), host-tested. The kernel (network
//! setup, sockets, the serving loop) is `main.rs`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod http;
